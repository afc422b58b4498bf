# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
"""`ultra-hstu bench quality` refuses --configs names it does not know, before any run."""

from ultra_hstu_plugin.bench import quality


def test_unknown_config_is_an_error_listing_the_known_ones(tmp_path, capsys):
    argv = ["--preset", "cpu-smoke", "--configs", "hstu_d1,hstu_d9", "--out", str(tmp_path)]
    assert quality.main(argv) == 2
    err = capsys.readouterr().err
    assert "unknown --configs hstu_d9" in err and "hstu_d1" in err and "abl_mot" in err
    assert not (tmp_path / "quality.jsonl").exists()  # nothing ran


def test_budget_starts_no_run_that_the_finished_ones_say_cannot_finish(tmp_path):
    """One run of config a finishes in ~1.5 s; with 2.5 s of budget, a second seed of a (its
    own config's time) and a config b (the shortest finished run's time) cannot finish, so
    they are recorded as not started instead of being started and cut."""
    import argparse
    import subprocess
    import sys
    import time
    from types import SimpleNamespace

    from ultra_hstu_plugin.bench import quality

    def job(config, seed):
        plan, variant = SimpleNamespace(name="synthetic"), SimpleNamespace(name=config)
        return quality.Job(plan, variant, seed, tmp_path / f"{config}{seed}", None)

    done, skipped = [], []

    class Fake(quality.Runner):
        def _start(self, j):
            j.started = time.time()
            j.proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1.5)"])

        def _reap(self, j, status, error):
            done.append((j.variant.name, j.seed, status))

        def _skip(self, j, why):
            skipped.append((j.variant.name, j.seed, why))

    args = argparse.Namespace(parallel=1, time_budget=2.5, run_timeout=60)
    runner = Fake(args, "cpu", writer=None)
    runner.run([job("a", 0), job("a", 1), job("b", 0)])
    assert done == [("a", 0, "ok")]
    assert [(c, s) for c, s, _ in skipped] == [("a", 1), ("b", 0)]
    assert all("not started" in w and "a run here takes ~" in w for _, _, w in skipped)
    assert runner.expected_seconds(job("a", 2)) >= 1.5
