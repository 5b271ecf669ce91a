"""Model files by name with no network (distill/hub_offline.py): the Hub probed once, the cache alone offline."""

from __future__ import annotations

from pathlib import Path

import pytest

from distill import hub_offline
from distill.errors import UserError


@pytest.fixture(autouse=True)
def fresh_probe(monkeypatch: pytest.MonkeyPatch):
    for key in ("HF_HUB_OFFLINE", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # a refused port: no Hub
    hub_offline.hub_reachable.cache_clear()
    yield
    hub_offline.hub_reachable.cache_clear()


def test_no_hub_means_the_cache_alone_and_a_folder_is_read_as_it_is(tmp_path: Path) -> None:
    assert hub_offline.hub_reachable() is False
    assert hub_offline.load_kwargs("Qwen/Qwen2.5-Math-7B") == {"local_files_only": True}
    assert hub_offline.load_kwargs(str(tmp_path)) == {}


def test_offline_by_switch_and_online_behind_a_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.example:3128")
    assert hub_offline.hub_reachable() is True
    hub_offline.hub_reachable.cache_clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_offline.hub_reachable() is False


def test_a_model_missing_offline_is_one_line_with_the_fix() -> None:
    def load(name: str, **kwargs: object) -> None:
        assert kwargs == {"local_files_only": True, "dtype": "x"}
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files\nand more")

    with pytest.raises(UserError) as e:
        hub_offline.from_pretrained(load, "org/model", "base_model", dtype="x")
    said = str(e.value)
    assert "\n" not in said and said.startswith("base_model 'org/model': not in this machine's Hub cache")
    assert "`hf download org/model`" in said
    assert "--repo-type dataset" in hub_offline.reason("org/set", OSError(), "dataset")
