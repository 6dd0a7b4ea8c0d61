"""One answer of the WSGI stack as productsite/wsgi.py builds it (the fast-path parity tests)."""

import json


class Answer:
    def __init__(self, status: str, headers: list[tuple[str, str]], body: bytes, django: bool) -> None:
        self.status_code = int(status[:3])
        self.headers = dict(headers)
        self.header_list = headers
        self.body = body
        self.handled_by_django = django  # Django's handler ran (not the fast path)

    def json(self):
        return json.loads(self.body)
