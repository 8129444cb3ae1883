"""The evidence a request binds: one digest, and what changed named part by part."""

from __future__ import annotations

from core.evidence import PARTS, Evidence, file_hashes, short


def _parts(**changes):
    parts = {part: {} for part in PARTS}
    parts["model files"] = {"MLmodel": "a" * 64, "model.skops": "b" * 64}
    parts["metrics"] = {"test_f1": "c" * 64}
    parts.update(changes)
    return parts


def test_the_digest_is_stable_and_covers_every_part():
    one, two = Evidence(_parts()), Evidence(_parts())
    assert one.digest == two.digest and len(one.digest) == 64
    assert Evidence.from_dict(one.to_dict()).digest == one.digest
    assert Evidence(_parts(card={"model_card.json": "d" * 64})).digest != one.digest
    assert short(one.digest) == one.digest[:12] and short(None) == "-"


def test_changes_name_the_items_of_each_part():
    was = Evidence(_parts())
    now = Evidence(_parts(**{"model files": {"MLmodel": "e" * 64, "model.skops": "b" * 64,
                                             "extra.py": "f" * 64},
                             "metrics": {}}))  # fmt: skip
    assert was.changes(now) == [
        "model files changed since the request: MLmodel, extra.py",
        "metrics changed since the request: test_f1",
    ]
    assert was.changes(Evidence(_parts())) == []


def test_file_hashes_of_a_folder_and_of_a_file(tmp_path):
    tmp_path = tmp_path / "model"
    (tmp_path / "sub").mkdir(parents=True)
    (tmp_path / "MLmodel").write_text("flavors: {}\n")
    (tmp_path / "sub" / "x.bin").write_bytes(b"\x00\x01")
    found = file_hashes(tmp_path)
    assert sorted(found) == ["MLmodel", "sub/x.bin"]
    assert file_hashes(tmp_path / "MLmodel") == {"MLmodel": found["MLmodel"]}
