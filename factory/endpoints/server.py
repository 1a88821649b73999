"""A small loopback OpenAI-compatible chat server backed by a local Hugging Face model folder.

For tests and the CPU demo, not for throughput: one generation at a time, bound to 127.0.0.1 only.
`python -m factory.endpoints.server MODEL_DIR [--port 8000]` prints its base URL, then serves.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator, Protocol

log = logging.getLogger(__name__)
LOOPBACK = "127.0.0.1"


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


class BackendError(Exception):
    """A request the backend answers with an HTTP error status (bad input, or an injected fault)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Backend(Protocol):
    def complete(self, messages: list[dict[str, str]], max_tokens: int, temperature: float,
                 seed: int | None) -> Completion: ...


class HFBackend:
    """Generates with `model.generate` from a local HF folder; one request at a time."""

    def __init__(self, model_dir: str | Path, max_new_tokens: int = 256):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
        self.max_new_tokens = max_new_tokens
        self.context = getattr(self.model.config, "max_position_embeddings", 2048)
        self._lock = threading.Lock()

    def complete(self, messages: list[dict[str, str]], max_tokens: int, temperature: float,
                 seed: int | None) -> Completion:
        import torch

        new = min(max_tokens, self.max_new_tokens, self.context - 1)
        # Keep the end of an over-long prompt: the instruction and the latest turn sit there.
        ids = self._encode(messages)[-(self.context - new):]
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
        with self._lock, torch.no_grad():
            if seed is not None:
                torch.manual_seed(seed)
            out = self.model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                      max_new_tokens=new, pad_token_id=self._pad_id(), **sampling)
        gen = out[0, len(ids):].tolist()
        finish = "stop" if gen and gen[-1] == self.tokenizer.eos_token_id else "length"
        return Completion(self.tokenizer.decode(gen, skip_special_tokens=True), len(ids), len(gen), finish)

    def choose(self, messages: list[dict[str, str]], choices: list[str]) -> str:
        """The choice the model finds most likely after the prompt (constrained decoding, as vLLM's
        `guided_choice` with greedy sampling): each choice scored by the sum of its tokens' log-probabilities."""
        import torch

        prompt = self._encode(messages)
        best, best_score = choices[0], float("-inf")
        with self._lock, torch.no_grad():
            for choice in choices:
                ids = self.tokenizer(choice, add_special_tokens=False)["input_ids"]
                seq = torch.tensor([(prompt + ids)[-self.context:]])
                logits = self.model(seq).logits[0, -len(ids) - 1:-1].float().log_softmax(-1)
                score = float(logits.gather(1, torch.tensor(ids).unsqueeze(1)).sum())
                if score > best_score:
                    best, best_score = choice, score
        return best

    def _encode(self, messages: list[dict[str, str]]) -> list[int]:
        if self.tokenizer.chat_template:
            return list(self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                           return_dict=False))
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
        return self.tokenizer(text)["input_ids"]

    def _pad_id(self) -> int:
        tok = self.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)


class _Handler(BaseHTTPRequestHandler):
    server: ChatServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/v1/models":
            self._reply(200, {"object": "list", "data": [{"id": self.server.model_name, "object": "model"}]})
        else:
            self._reply(404, {"error": {"message": f"no route {self.path}"}})

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._reply(404, {"error": {"message": f"no route {self.path}"}})
            return
        try:
            req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            if req.get("guided_choice"):
                done = self._choose(req["messages"], [str(c) for c in req["guided_choice"]])
            else:
                done = self.server.backend.complete(req["messages"], int(req.get("max_tokens") or 256),
                                                    float(req.get("temperature", 1.0)), req.get("seed"))
        except BackendError as e:
            self._reply(e.status, {"error": {"message": str(e)}})
            return
        except (ValueError, KeyError, TypeError) as e:
            self._reply(400, {"error": {"message": f"bad request: {e}"}})
            return
        self._reply(200, {
            "id": f"chatcmpl-{time.time_ns()}", "object": "chat.completion", "created": int(time.time()),
            "model": req.get("model", self.server.model_name),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": done.text},
                         "finish_reason": done.finish_reason}],
            "usage": {"prompt_tokens": done.prompt_tokens, "completion_tokens": done.completion_tokens,
                      "total_tokens": done.prompt_tokens + done.completion_tokens}})

    def _choose(self, messages: list[dict[str, str]], choices: list[str]) -> Completion:
        choose = getattr(self.server.backend, "choose", None)
        if choose is None:
            raise BackendError(400, "guided_choice is not supported by this backend")
        return Completion(choose(messages, choices), 0, 1, "stop")

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s " + format, self.address_string(), *args)


class ChatServer(ThreadingHTTPServer):
    """`/v1/chat/completions` and `/v1/models` on 127.0.0.1; port 0 picks a free port."""

    daemon_threads = True

    def __init__(self, backend: Backend, port: int = 0, model_name: str = "local"):
        super().__init__((LOOPBACK, port), _Handler)
        self.backend = backend
        self.model_name = model_name

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.server_address[1]}/v1"

    @contextlib.contextmanager
    def running(self) -> Iterator[str]:
        """Serve in a background thread; yields the base URL and always shuts down."""
        thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        try:
            yield self.base_url
        finally:
            self.shutdown()
            self.server_close()
            thread.join(timeout=5)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m factory.endpoints.server", description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path, help="local Hugging Face model folder")
    parser.add_argument("--port", type=int, default=8000, help="port on 127.0.0.1 (0: any free port)")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="cap on tokens per completion")
    args = parser.parse_args(argv)
    server = ChatServer(HFBackend(args.model_dir, args.max_new_tokens), args.port, model_name=args.model_dir.name)
    print(f"serving {server.base_url}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    server.server_close()


if __name__ == "__main__":
    main()
