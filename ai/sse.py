"""Server-Sent Events framing: one `id:` line and one `data:` line of JSON per event."""

import json

KEEPALIVE = b": keep-alive\n\n"


class EventEncoder:
    """Numbers the events of one stream (1, 2, 3 …) and encodes each as an SSE frame.

    JSON escapes every control character, so `\\r`, `\\n` and `\\0` never appear inside the
    `data:` field and one event is always exactly one `data:` line.
    """

    def __init__(self) -> None:
        self.last_id = 0

    def encode(self, data: dict) -> bytes:
        self.last_id += 1
        payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        return f"id: {self.last_id}\ndata: {payload}\n\n".encode()
