"""The record's typed shape, its validator, and the migration of 0.1 and 0.2 records."""

import copy
import json
import math
from pathlib import Path

import pytest

from ncbench._errors import InputError
from ncbench.record import SCHEMA_VERSION, upgrade_record, validate_record

V1 = Path(__file__).parent / "data" / "v1-record-digits.json"


def test_a_fresh_record_is_valid_and_complete(digits_record):
    rec = validate_record(copy.deepcopy(digits_record))
    assert rec["schema_version"] == SCHEMA_VERSION == 3
    assert len(rec["extra_robustness"]) == 1 and rec["extra_robustness"][0]["name"] == "fgsm"
    env = rec["provenance"]["environment"]
    assert env["threads"] >= 1 and env["cpu_capability"] and env["tf32_matmul"] is False
    assert set(rec["provenance"]["versions"]) >= {"torch", "torchattacks", "cuda", "cudnn"}
    m = rec["measures"]
    assert m["num_parameters"] == rec["provenance"]["model"]["num_parameters"] > 0
    assert m["sum_squared_weights"] > 0 and m["final_train_loss"] == rec["training"]["final_loss"]
    json.dumps(rec, allow_nan=False)


@pytest.mark.parametrize("path,value,message", [
    (("accuracy", "test"), "0.9", "accuracy.test"),  # a number stored as a string
    (("accuracy", "test"), 1.5, "accuracy.test"),  # not a fraction
    (("collapse", "train", "nc1"), float("nan"), "collapse.train.nc1"),
    (("robustness", "reliable"), None, "robustness.reliable"),
    (("provenance", "job_id"), "abc", "provenance.job_id"),
    (("provenance", "surprise"), 1, "provenance.surprise"),  # unknown keys are refused
])
def test_validator_names_the_bad_field(digits_record, path, value, message):
    rec = copy.deepcopy(digits_record)
    target = rec
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(InputError, match=message.replace(".", r"\.")):
        validate_record(rec)


def test_a_missing_field_is_named(digits_record):
    rec = copy.deepcopy(digits_record)
    del rec["robustness"]["first_fooled_eps"]
    with pytest.raises(InputError, match=r"robustness\.first_fooled_eps: Field required"):
        validate_record(rec)


def test_v1_records_are_upgraded():
    """A record written by ncbench 0.1 (tests/data, made by its `ncbench evaluate --dataset digits --epochs 3
    --eps 0,0.05,0.1 --steps 3 --n-points 40`)."""
    from ncbench.config import build_config
    from ncbench.identity import digest, identity

    old = json.loads(V1.read_text())
    assert old["schema_version"] == 1
    new = upgrade_record(copy.deepcopy(old))
    assert new["schema_version"] == 3
    raw = copy.deepcopy(old["provenance"]["config"])
    assert raw["train"].pop("amp") is True  # 0.1's default, which meant bf16 on CUDA only: this ran on a CPU
    expected = identity(build_config(raw))
    expected.pop("predictors")  # 0.2's identity rules: no optional predictors
    expected["ncbench"] = "0.1"  # 0.1 computed some numbers differently: not the same job as 0.2's
    assert new["provenance"]["identity"] == expected
    assert new["provenance"]["job_id"] == digest(expected)
    rob = new["robustness"]
    assert rob["label"] == "PGD-Linf, 3 steps, step 2.5·eps/3, random start, 1 restart"
    assert rob["first_fooled_eps"] is None  # 0.1 kept only the flags at the largest eps
    assert not {c["check"] for c in rob["checks"]} & {"robust_le_clean", "monotone_in_eps"}
    assert len(rob["checks"]) == len(old["robustness"]["checks"]) - 2
    p = 45  # C = 10: 45 unordered pairs; the same cosines, counted twice now
    for split in ("train", "test"):
        got, was = new["collapse"][split]["nc2_equiangle_means"], old["collapse"][split]["nc2_equiangle_means"]
        assert got == pytest.approx(was * math.sqrt(2 * (p - 1) / (2 * p - 1)), rel=1e-12)
        assert new["collapse"][split]["nc1"] == old["collapse"][split]["nc1"]
    assert new["measures"]["final_train_loss"] == old["training"]["final_loss"]


def test_v1_mnist1d_records_claim_no_validation_split():
    # catches: the upgrade computing the identity with today's mnist1d default (a 500-point validation split):
    # a 0.1 record would get another job id than 0.2 gave it, and claim a split 0.1 never made
    old = json.loads(V1.read_text())
    old["provenance"]["config"]["dataset"] = "mnist1d"
    old["provenance"]["config"]["model"] = "cnn1d"
    old["provenance"]["config"]["model_args"] = {}
    old["provenance"]["config"]["dataset_args"] = {}
    new = upgrade_record(old)
    assert "val_size" not in new["provenance"]["identity"]["dataset"]["args"]


def test_v2_records_are_upgraded_claiming_nothing_0_2_did_not_measure():
    """A record of the committed ncbench 0.2 export (leaderboards/data at 0.2, kept in tests/data)."""
    old = json.loads((Path(__file__).parent / "data" / "v2-record-digits.json").read_text())
    assert old["schema_version"] == 2
    new = upgrade_record(copy.deepcopy(old))
    assert new["schema_version"] == 3
    # catches: a migration that changes the identity (the same 0.2 job would be stored twice) or the numbers
    assert new["provenance"] == old["provenance"] and new["collapse"] == old["collapse"]
    assert new["accuracy"] == {**old["accuracy"], "val": None, "train_adv": None}
    assert new["estimators"] == {"confidence": None, "atc": None, "atc_threshold": None}
    assert new["predictions"] == {} and new["collapse_info"] == {}
    assert {k: v for k, v in new["measures"].items() if v is not None} == \
        {k: v for k, v in old["measures"].items() if v is not None}


def test_unknown_versions_and_non_records_are_refused(digits_record):
    newer = dict(copy.deepcopy(digits_record), schema_version=4)
    with pytest.raises(InputError, match="newer than this ncbench reads"):
        upgrade_record(newer)
    with pytest.raises(InputError, match="not an ncbench evaluate record"):
        upgrade_record({"kind": "something else"})
    assert upgrade_record(copy.deepcopy(digits_record)) == digits_record
