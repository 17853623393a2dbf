import httpx


def test_server_root_lists_entity_sets(sta_server: str) -> None:
    root = httpx.get(sta_server + "/").json()
    names = {item["name"] for item in root["value"]}
    assert {"Things", "Datastreams", "Observations"} <= names
    assert any(c.endswith("/data-array") for c in root["serverSettings"]["conformance"])
