"""HPC-as-API: the official ``openai`` client talking to STREAM through the proxy.

The proxy (``stream proxy`` on the command line) serves any ChatStream as an OpenAI-compatible
API, so tools that only know OpenAI (the ``openai`` SDK, ``ChatOpenAI``, curl, IDE plugins) use
the local, HPC and cloud tiers with no HPC knowledge. This recipe starts the proxy in-process on
a loopback port, creates an API key (stored as a hash only), and then is an ordinary OpenAI
client: list the models, ask, stream, read the routing record (``x-stream-route`` header and the
``stream`` field), see a refusal, and read the usage the proxy recorded.

The command-line equivalent::

    stream keys create --name alice          # prints the key once
    stream proxy --port 8000                 # serves http://127.0.0.1:8000/v1
    OPENAI_BASE_URL=http://127.0.0.1:8000/v1 OPENAI_API_KEY=sk-stream-... your-openai-app
    stream usage                             # requests and tokens per identity and tier

Run: ``python cookbook/proxy_openai_client.py`` (offline, embedded stack; set ``STREAM_CONFIG``
to serve your own tiers).
"""

from __future__ import annotations

import json
import tempfile

import openai
from _common import build_chat_stream

from stream_langchain.proxy import KeyRing, ProxyServer, Store, create_app

QUESTION = "Name three primary colours."


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp, build_chat_stream(max_tokens=24) as chat:
        store = Store(f"sqlite:///{tmp}/proxy.db")  # default: a file in your data directory
        key, record = KeyRing(store).create("alice")
        print(f"created key {record.key_id} for alice (only its SHA-256 is stored)")
        try:
            with ProxyServer(create_app(chat, store=store)) as server:
                client = openai.OpenAI(base_url=server.url + "/v1", api_key=key)
                print("models: " + ", ".join(m.id for m in client.models.list()))

                raw = client.chat.completions.with_raw_response.create(
                    model="stream", messages=[{"role": "user", "content": QUESTION}])
                answer = raw.parse()
                route = json.loads(raw.headers["x-stream-route"])
                print(f"A: {answer.choices[0].message.content!r}")
                print(f"route: tier={route['tier']} model={route['model']} "
                      f"complexity={route['complexity']} judge={route['judge']}")

                parts, usage = [], None
                for chunk in client.chat.completions.create(
                        model="stream-local", stream=True, stream_options={"include_usage": True},
                        messages=[{"role": "user", "content": QUESTION}]):
                    if chunk.choices and chunk.choices[0].delta.content:
                        parts.append(chunk.choices[0].delta.content)
                    usage = chunk.usage or usage
                print(f"streamed: {''.join(parts)!r}")
                assert usage is not None
                print(f"usage: prompt_tokens={usage.prompt_tokens} "
                      f"completion_tokens={usage.completion_tokens}")

                try:
                    client.chat.completions.create(
                        model="gpt-4o", messages=[{"role": "user", "content": QUESTION}])
                except openai.NotFoundError as exc:
                    body = exc.body if isinstance(exc.body, dict) else {}
                    print(f"an unknown model is refused: {exc.status_code} {body.get('code')}")
            store.flush()
            for row in store.summary():
                print(f"usage rows: {row['identity']} {row['tier']} {row['requests']} requests, "
                      f"{row['input_tokens']} input + {row['output_tokens']} output tokens")
        finally:
            store.close()


if __name__ == "__main__":
    main()
