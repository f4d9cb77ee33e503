from dataclasses import dataclass, field

import pytest

from common.config import ConfigError, from_dict
from common.deploy import load_deployment


@dataclass(frozen=True)
class Inner:
    name: str
    weight: float = 1.0


@dataclass(frozen=True)
class Outer:
    port: int
    items: list[Inner] = field(default_factory=list)
    debug: bool = False


def test_builds_nested_dataclasses():
    o = from_dict(Outer, {"port": 80, "items": [{"name": "a", "weight": 2}]})
    assert o == Outer(80, [Inner("a", 2.0)])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"port": 80, "bogus": 1}, "unknown key 'bogus'"),
        ({}, "missing required key 'port'"),
        ({"port": "80"}, "config.port: expected an integer"),
        ({"port": 1, "debug": 1}, "config.debug: expected true or false"),
        ({"port": 1, "items": [{"name": 3}]}, "config.items[0].name: expected a string"),
    ],
)
def test_errors_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        from_dict(Outer, data)


def test_deployment_file_errors_name_file_and_key(tmp_path):
    p = tmp_path / "cairn.toml"
    p.write_text(
        '[cluster]\nhash_path_prefix = "a"\nhash_path_suffix = "b"\nreplicas = 3\n'
        '[[nodes]]\nname = "n1"\ndevices = [{name = "d1"}]\n[proxy]\nprot = 1\n'
    )
    with pytest.raises(ConfigError, match=r"cairn.toml.proxy: unknown key 'prot'"):
        load_deployment(p)
    p.write_text(p.read_text().replace("prot", "port"))
    cfg = load_deployment(p)
    assert cfg.proxy.port == 1
    assert cfg.data_dir == str(tmp_path)


def test_proxy_read_order_is_shuffle_or_ring():
    from common.deploy import ProxyConfig

    assert from_dict(ProxyConfig, {}).read_order == "shuffle"
    assert from_dict(ProxyConfig, {"read_order": "ring"}).read_order == "ring"
    with pytest.raises(ConfigError, match="read_order"):
        from_dict(ProxyConfig, {"read_order": "fastest"})


def test_proxy_listing_limits_default_and_bounds():
    from common.deploy import ProxyConfig
    from common.listingdb.listing import LISTING_LIMIT_MAX

    cfg = from_dict(ProxyConfig, {})
    assert (cfg.container_listing_limit, cfg.account_listing_limit) == (10000, 10000)
    cfg = from_dict(ProxyConfig, {"container_listing_limit": 1, "account_listing_limit": 500})
    assert (cfg.container_listing_limit, cfg.account_listing_limit) == (1, 500)
    assert from_dict(ProxyConfig, {"account_listing_limit": LISTING_LIMIT_MAX})
    for key in ("container_listing_limit", "account_listing_limit"):
        for bad in (0, -1, LISTING_LIMIT_MAX + 1):
            with pytest.raises(ConfigError, match=f"{key} must be between 1 and 10000, not {bad}"):
                from_dict(ProxyConfig, {key: bad})
        with pytest.raises(ValueError, match=key):
            ProxyConfig(**{key: 0})
