# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""`ultra-hstu bench quality` refuses --configs names it does not know, before any run."""

from ultra_hstu_plugin.bench import quality


def test_unknown_config_is_an_error_listing_the_known_ones(tmp_path, capsys):
    argv = ["--preset", "cpu-smoke", "--configs", "hstu_d1,hstu_d9", "--out", str(tmp_path)]
    assert quality.main(argv) == 2
    err = capsys.readouterr().err
    assert "unknown --configs hstu_d9" in err and "hstu_d1" in err and "abl_mot" in err
    assert not (tmp_path / "quality.jsonl").exists()  # nothing ran
