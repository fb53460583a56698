"""Scipion's GPU choice -> torch devices (no GPU needed)."""
from deephemnma.protocols.base import gpu_devices


def test_one_gpu():
    assert gpu_devices(True, [1], 2) == (["cuda:1"], None)


def test_several_gpus_one_device_each():
    assert gpu_devices(True, [0, 1, 1], 4) == (["cuda:0", "cuda:1"], None)


def test_gpu_requested_but_absent_warns_and_uses_cpu():
    devices, warning = gpu_devices(True, [0], 0)
    assert devices == ["cpu"] and "none is available" in warning


def test_ids_beyond_the_machine_are_dropped_with_a_warning():
    devices, warning = gpu_devices(True, [0, 3], 2)
    assert devices == ["cuda:0"] and "[3]" in warning
    devices, warning = gpu_devices(True, [5], 2)
    assert devices == ["cpu"] and "CPU" in warning


def test_gpu_not_wanted():
    assert gpu_devices(False, [0], 4) == (["cpu"], None)
