"""The OpenAPI schema describes the stream: its JSON request body and its `text/event-stream` answer."""

import pytest

pytestmark = pytest.mark.django_db


def test_schema_describes_the_stream_request_and_event_stream_answer(client):
    schema = client.get("/api/schema/", {"format": "json"}).json()
    operation = schema["paths"]["/api/ai/chat/stream"]["post"]
    body_name = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    body = schema["components"]["schemas"][body_name]
    assert set(body["properties"]) == {"message", "conversation_id", "adapter", "regenerate"}
    assert "required" not in body  # `message` unless `regenerate`: said in its description
    assert "text/event-stream" in operation["responses"]["200"]["content"]
    assert {"400", "404", "409", "422", "429", "503"} <= set(operation["responses"])
    assert "Idempotency-Key" in {parameter["name"] for parameter in operation["parameters"]}
    for path in ("/api/ai/chat/stream/{message_id}", "/api/ai/chat/stream/{message_id}/stop"):
        assert path in schema["paths"]
    assert (
        "text/event-stream"
        in schema["paths"]["/api/ai/chat/stream/{message_id}"]["get"]["responses"]["200"]["content"]
    )
    assert "get" in schema["paths"]["/api/quota/"]
