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


def test_schema_lists_the_ai_sdk_chat_endpoints(client):
    schema = client.get("/api/schema/", {"format": "json"}).json()
    chat = schema["paths"]["/api/ai/chat"]["post"]
    body_name = chat["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    assert set(schema["components"]["schemas"][body_name]["properties"]) == {
        "id",
        "messages",
        "trigger",
        "messageId",
        "adapter",
    }
    assert "text/event-stream" in chat["responses"]["200"]["content"]
    assert {"400", "404", "409", "429", "503"} <= set(chat["responses"])
    reconnect = schema["paths"]["/api/ai/chat/{chat_id}/stream"]["get"]["responses"]
    assert "text/event-stream" in reconnect["200"]["content"]
    assert "204" in reconnect
    assert "post" in schema["paths"]["/api/ai/chat/{chat_id}/stop"]
    messages = schema["paths"]["/api/ai/chat/{chat_id}"]["get"]["responses"]["200"]["content"]
    assert messages["application/json"]["schema"]["$ref"].endswith("/UIChat")
