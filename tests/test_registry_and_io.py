import json
import os

import pytest

from ncbench._errors import UnknownNameError
from ncbench._io import dumps, write_new
from ncbench._registry import Registry


def test_registry_lists_close_matches_and_refuses_duplicates():
    reg = Registry("widget")
    reg.register("resnet18")(lambda: 1)
    reg.register("resnet34")(lambda: 2)
    reg.register("vgg11")(lambda: 3)
    assert reg.names() == ["resnet18", "resnet34", "vgg11"]
    assert reg.names("resnet*") == ["resnet18", "resnet34"]
    with pytest.raises(UnknownNameError, match=r"unknown widget 'resnet19'; did you mean 'resnet18'.*valid: resnet18"):
        reg.get("resnet19")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("vgg11")(lambda: 4)


def test_write_new_never_overwrites_and_leaves_no_temporary(tmp_path):
    a = write_new(tmp_path, "rec", b"first")
    b = write_new(tmp_path, "rec", b"second")
    assert a.name == "rec.json" and b.name == "rec-2.json"
    assert a.read_bytes() == b"first" and b.read_bytes() == b"second"
    assert sorted(os.listdir(tmp_path)) == ["rec-2.json", "rec.json"]


def test_dumps_refuses_nan():
    assert json.loads(dumps({"a": 1.5})) == {"a": 1.5}
    with pytest.raises(ValueError):
        dumps({"a": float("nan")})
