"""`/api/schema/` (OpenAPI 3) and `/api/docs/`, its browsable page with assets served by the app."""

import re
from html.parser import HTMLParser

import pytest
import yaml

pytestmark = pytest.mark.django_db


def test_schema_is_openapi_yaml_by_default(client):
    response = client.get("/api/schema/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi;")  # drf-spectacular's YAML
    schema = yaml.safe_load(response.content)
    assert schema["openapi"].startswith("3.")


def test_schema_as_json_describes_the_conversations_endpoints(client):
    response = client.get("/api/schema/", {"format": "json"})

    assert response.status_code == 200
    assert "json" in response["Content-Type"]
    paths = response.json()["paths"]
    assert set(paths["/api/conversations/"]) >= {"get", "post"}
    assert set(paths["/api/conversations/{id}/"]) >= {"get", "patch", "delete"}
    assert "put" not in paths["/api/conversations/{id}/"]
    assert "get" in paths["/api/conversations/{id}/messages/"]


def test_schema_does_not_describe_the_catch_all_for_unknown_paths(client):
    paths = client.get("/api/schema/", {"format": "json"}).json()["paths"]

    assert all(path.startswith("/api/") and "." not in path and "*" not in path for path in paths), paths


class AssetCollector(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        url = attrs.get("src") or (attrs.get("href") if tag == "link" else None)
        if url:
            self.urls.append(url)


def test_docs_page_loads_its_assets_from_the_app_not_a_cdn(client):
    response = client.get("/api/docs/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    collector = AssetCollector()
    collector.feed(page)
    assert collector.urls
    assert all(url.startswith("/static/") for url in collector.urls), collector.urls
    assert not re.search(r"https?://", " ".join(collector.urls))
    assert "cdn" not in page.lower()
    scripts = [url for url in collector.urls if url.endswith(".js")]
    assert scripts
    for url in [scripts[0], *[u for u in collector.urls if u.endswith(".css")][:1]]:
        asset = client.get(url)
        assert asset.status_code == 200, url
        assert int(asset["Content-Length"]) > 1000, url
