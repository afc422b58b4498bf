# Copyright (c) 2026 ultra-hstu-plugin authors. Licensed under the Apache License, Version 2.0.
import pytest

from ultra_hstu_plugin.compat import FbgemmTorchMismatchError, check_torch_fbgemm


@pytest.mark.parametrize(
    "torch_v, fbgemm_v", [("2.13.0", "1.8.0"), ("2.14.1+cu128", "1.9.0"), ("2.11.0+cu130", "1.6.0")]
)
def test_matching_pairs_pass(torch_v, fbgemm_v):
    check_torch_fbgemm(torch_v, ("fbgemm-gpu-cpu", fbgemm_v))


def test_mismatch_says_what_to_install():
    with pytest.raises(FbgemmTorchMismatchError) as err:
        check_torch_fbgemm("2.13.0", ("fbgemm-gpu", "1.9.0"))
    msg = str(err.value)
    assert "torch 2.14" in msg and "fbgemm-gpu==1.8.*" in msg


def test_no_fbgemm_installed_is_fine(monkeypatch):
    from ultra_hstu_plugin import compat

    monkeypatch.setattr(compat, "installed_fbgemm", lambda: None)
    compat.check_torch_fbgemm("2.13.0")  # kernels need no fbgemm; GR-facing code reports it on use
    monkeypatch.setattr(compat, "installed_fbgemm", lambda: ("fbgemm-gpu-cpu", "1.7.0"))
    with pytest.raises(FbgemmTorchMismatchError):
        compat.check_torch_fbgemm("2.13.0")
