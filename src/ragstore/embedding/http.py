"""Embeddings from an OpenAI-compatible ``POST /v1/embeddings`` endpoint.

OpenAI, vLLM, Text Embeddings Inference, Ollama and LiteLLM all serve this one API, so one
provider covers them. A spec for it names the endpoint in its options::

    {"base_url": "http://127.0.0.1:8080/v1", "model": "bge-small-en-v1.5",
     "api_key_env": "RAGSTORE_EMBEDDING_API_KEY", "timeout_s": 30, "max_retries": 5,
     "batch_size": 64, "tokenizer": "/models/bge-small", "encoding_format": "base64",
     "dimensions": 1024}

``dimensions`` (optional) is sent with every request: OpenAI's text-embedding-3 models then
answer vectors of that length (the pin checks that the endpoint does).

Up to ``concurrency`` requests (default 4) are in flight at once when there is more than one
batch to send: a remote API's round trip is mostly waiting (a 100 ms answer for 64 texts
caps one request at a time at 640 texts a second, whatever the endpoint's hardware), and a
GPU server batches concurrent requests together. ``"concurrency": 1`` sends one at a time,
for an endpoint that must not be asked more. Each request keeps its own retries; a 429 on one
does not hold the others back, and each honours its own ``Retry-After``.

The API key is read from the environment variable ``api_key_env`` names, held as a
``SecretStr`` and only ever written into the ``Authorization`` header: it is never stored in
the database or printed. ``"auth": "basic"`` (``models add --auth basic``) sends it as HTTP
basic auth instead of ``Bearer``: the variable then holds ``user:password``, for an endpoint
(a proxy in front of it) that takes nothing else; an unset variable, or one without the
``:``, is a ConfigError naming it, before anything is sent. Credentials written into
``base_url`` (``user:password@``) are refused when a model is pinned (``modelops.specs``);
a pin an older version made with one still sends them (httpx: as basic auth, in place of
the key), its errors name the URL with them masked, and ``ragstore db check`` names it with
the command that pins it again with the password in a variable.

Rate limits (429) and server errors (5xx) are retried with
exponential backoff (honouring ``Retry-After``); other 4xx answers fail at once with the
server's own message.

Vectors are asked for as base64 (``encoding_format``, OpenAI's own client does the same):
little-endian float32 bytes, a quarter of the JSON of printed floats, decoded with no number
parsing on either side. A server that ignores the field and sends lists of numbers is read
as well; one that refuses base64 with a 4xx answer is asked again for floats, and from then
on this embedder asks for floats (``"encoding_format": "float"`` skips the first try).

Token counting (the chunker needs it) uses the tokenizer at ``options["tokenizer"]`` when
given (a local directory, never a hub download); otherwise words and punctuation marks are
counted, which a sub-word tokenizer never undercounts by much more than the margin the
server truncates anyway.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import numpy as np
from pydantic import SecretStr

from ragstore import forks
from ragstore.embedding.base import (
    Embedder,
    TokenEncoding,
    Vectors,
    tokenizer_counts,
    tokenizer_encodings,
    tokenizer_joins_add_up,
    tokenizer_spans,
)
from ragstore.embedding.paths import resolve_path
from ragstore.errors import ConfigError, EmbeddingProviderError, ModelError, ModelMismatchError
from ragstore.models import ModelSpec
from ragstore.observability import metrics
from ragstore.urls import shown_url, without_userinfo

DEFAULT_API_KEY_ENV = "RAGSTORE_EMBEDDING_API_KEY"
# how the variable's secret is sent: ``Authorization: Bearer KEY`` or basic auth of the
# ``user:password`` it holds (``options["auth"]``; a pin without it is bearer)
AUTH_SCHEMES = ("bearer", "basic")
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_BACKOFF_S = 30.0
ENCODING_FORMATS = ("base64", "float")
DEFAULT_CONCURRENCY = 4  # requests in flight at once: 2x a load at a 100 ms round trip
MAX_CONCURRENCY = 64
_WORDS = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def url_problem(base_url: str) -> str | None:
    """Why ``base_url`` is no endpoint httpx can send to, in words, or None.

    httpx reads a URL only when sending it: a malformed one (``http://[::1/v1``, a port
    ``80a``) raised its ``InvalidURL`` out of ``models add`` as a traceback, and one with
    no host (``http:///v1``) failed each request as a transport error, retried six times
    and then blamed on rate limits."""
    if not base_url.startswith(("http://", "https://")):
        return "not http:// or https://"
    try:
        url = httpx.URL(base_url)
    except httpx.InvalidURL as exc:
        return str(exc)
    if not url.host:
        return "no host in it"
    return None


def _sendable_key(key: SecretStr, where: str) -> SecretStr:
    """``key`` without the spaces around it (a key file's line break), or a ConfigError
    naming ``where`` (the variable) when an HTTP header cannot carry it. Sent as it was,
    a line break inside made httpx's error quote the whole ``Authorization`` header and a
    non-ASCII character raised a UnicodeEncodeError holding it: the key reached the
    exception, the CLI's output and the HTTP API's answer."""
    text = key.get_secret_value().strip()
    if not all(" " <= c <= "~" for c in text):
        raise ConfigError(
            f"{where} holds a character an HTTP header cannot carry (a line break, a "
            "control character or a non-ASCII one); set it to the API key alone"
        )
    return SecretStr(text)


def _basic_token(raw: str | None, where: str, spec: ModelSpec) -> tuple[SecretStr, list[str]]:
    """The ``Basic`` token of the ``user:password`` that ``raw`` (the variable ``where``
    names, or a key given) holds, and the texts its errors must mask (the pair, the
    password and the token). An endpoint pinned with ``--auth basic`` answers nothing
    without them, so a missing or malformed pair is one ConfigError here, naming the
    variable and what it must hold, instead of an HTTP 401 per request."""
    text = (raw or "").strip()
    label = spec.key if spec.revision else spec.name  # a draft being pinned has none yet
    how = f"model {label} sends basic auth (--auth basic): set {where} to USER:PASSWORD"
    if not text:
        raise ConfigError(f"{where} is not set (or empty); {how}")
    if not all(c >= " " and c != "\x7f" for c in text):
        raise ConfigError(f"{where} holds a line break or a control character; {how}, on one line")
    user, colon, password = text.partition(":")
    if not colon or not user:
        raise ConfigError(f"{where} holds no USER: before the password; {how}")
    token = base64.b64encode(text.encode("utf-8")).decode("ascii")
    return SecretStr(token), [s for s in (text, password, token) if s]


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds the server asked us to wait (delta-seconds or an HTTP date), if it said."""
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class HttpEmbedder(Embedder):
    """A pinned remote model behind an OpenAI-compatible embeddings endpoint."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        api_key: SecretStr | None = None,
        batch_size: int | None = None,
        client: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        concurrency: int | None = None,
    ) -> None:
        opts = spec.options
        base_url = str(opts.get("base_url", "")).rstrip("/")
        problem = url_problem(base_url)
        if problem is not None:
            raise ModelError(
                f"model {spec.key}: options.base_url must be an http(s) URL such as "
                f"http://127.0.0.1:8080/v1, got {without_userinfo(base_url)!r} ({problem})"
            )
        self.spec = spec
        self.url = base_url + "/embeddings"
        # how errors name it: a pin made before credentials in the URL were refused
        # (``modelops.specs``) holds a password there, which httpx still sends
        self.shown_url = shown_url(self.url)
        self.remote_model = str(opts.get("model") or spec.name)
        self.batch_size = int(batch_size or opts.get("batch_size", 64))
        self.max_retries = int(opts.get("max_retries", 5))
        self.backoff_s = float(opts.get("backoff_s", 0.5))
        # OpenAI's text-embedding-3 models answer shorter vectors when asked (``dimensions``)
        self.dimensions = int(opts["dimensions"]) if opts.get("dimensions") else None
        self.encoding_format = str(opts.get("encoding_format", "base64"))
        if self.encoding_format not in ENCODING_FORMATS:
            raise ModelError(
                f"model {spec.key}: options.encoding_format must be one of "
                f"{', '.join(ENCODING_FORMATS)}, got {self.encoding_format!r}"
            )
        self._format_settled = self.encoding_format == "float"  # a server took it
        # RAGSTORE_EMBED_CONCURRENCY (``concurrency``) over the pin's option: a rate limit
        # met later needs no new pin
        self.concurrency = _concurrency(
            concurrency or opts.get("concurrency", DEFAULT_CONCURRENCY), spec
        )
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()  # the pool's creation and the counters
        timeout = float(opts.get("timeout_s", 30.0))
        self.auth = str(opts.get("auth", "bearer"))
        if self.auth not in AUTH_SCHEMES:
            raise ModelError(
                f"model {spec.key}: options.auth must be one of {', '.join(AUTH_SCHEMES)}, "
                f"got {self.auth!r}"
            )
        env = str(opts.get("api_key_env", DEFAULT_API_KEY_ENV))
        self._secrets: list[str] = []  # what errors mask: the key, or the pair's parts
        if self.auth == "basic":
            raw = os.environ.get(env) if api_key is None else api_key.get_secret_value()
            where = env if api_key is None else "the credentials given"
            api_key, self._secrets = _basic_token(raw, where, spec)
        elif api_key is None:
            raw = os.environ.get(env)
            api_key = _sendable_key(SecretStr(raw), env) if raw else None
        else:
            api_key = _sendable_key(api_key, "the API key given")
        if api_key is not None and not self._secrets:
            self._secrets = [api_key.get_secret_value()]
        self._api_key = api_key
        self._key_env = env
        self._sleep = sleep
        self._timeout_s = timeout  # the whole answer's, not only each read's (_send)
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, 10.0))
        self._owns_client = client is None
        self._client: httpx.Client | None = client or httpx.Client(timeout=self._timeout)
        forks.register(self)
        self.requests = 0  # HTTP requests sent, retries included
        self.retries = 0
        self.tokenizer: Any = None
        tok = opts.get("tokenizer")
        if tok:
            self.tokenizer = _load_tokenizer(str(tok), spec)

    def _after_fork_in_child(self) -> None:
        """In a forked child: its own request threads (the parent's copy of the executor
        counted the parent's idle threads and started none, so an embed waited forever)
        and its own HTTP connections (kept-alive sockets shared with the parent would mix
        the two processes' answers); the parent's are left open, for the parent."""
        self._pool = None
        self._lock = threading.Lock()
        if self._owns_client:
            # made on first use: an ingest's parse workers are forked children that never
            # embed, and a client (its TLS context) cost each about a tenth of a second
            self._client = None

    # -- embedding ---------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self._api_key is not None:
            scheme = "Basic" if self.auth == "basic" else "Bearer"
            headers["Authorization"] = f"{scheme} {self._api_key.get_secret_value()}"
        return headers

    def _post(self, texts: Sequence[str], stop: threading.Event | None = None) -> dict[str, Any]:
        """One request, retried; ``stop`` set (a sibling request failed) ends its retries."""
        inputs = list(texts)
        attempt = 0
        while True:
            with self._lock:  # requests from several threads: += is not atomic
                self.requests += 1
            pause: float | None = None
            body: dict[str, Any] = {
                "model": self.remote_model,
                "input": inputs,
                "encoding_format": self.encoding_format,  # floats after a refusal
            }
            if self.dimensions is not None:
                body["dimensions"] = self.dimensions
            try:
                response, raw = self._send(body, len(inputs))
            except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
                # no request can go there: retrying it is no use (a transport error it was
                # retried six times, then blamed on rate limits)
                raise EmbeddingProviderError(
                    f"{self.shown_url} is not a URL a request can be sent to "
                    f"({self._masked(str(exc))}); not retried: pin the model with an "
                    "endpoint URL such as http://HOST:PORT/v1"
                ) from None
            except httpx.TimeoutException:
                failure = f"no answer within the timeout from {self.shown_url}"
            except httpx.TransportError as exc:
                failure = f"cannot reach {self.shown_url}: {self._masked(str(exc))}"
            else:
                if response.status_code == 200:
                    try:
                        data: dict[str, Any] = json.loads(raw)
                    except ValueError:
                        raise EmbeddingProviderError(
                            f"{self.shown_url} answered 200 with a body that is not JSON"
                        ) from None
                    self._format_settled = True
                    return data
                if (
                    400 <= response.status_code < 500
                    and not self._format_settled
                    and (response.status_code not in (401, 403, 404, 429))
                ):
                    # a server that knows only floats: ask again for those, from now on
                    self.encoding_format = "float"
                    self._format_settled = True
                    continue
                if response.status_code not in RETRY_STATUSES:
                    raise EmbeddingProviderError(
                        f"{self.shown_url} refused the request for model {self.remote_model!r}: "
                        f"HTTP {response.status_code} "
                        f"{self._masked(_server_message(raw))}{self._auth_hint(response)}"
                    )
                failure = f"{self.shown_url} answered HTTP {response.status_code}"
                pause = _retry_after(response)
            if attempt >= self.max_retries:
                # the fix named options of the model spec, which no command sets (`models
                # add` has no such flags), so a user could not follow it
                raise EmbeddingProviderError(
                    f"{failure} after {attempt + 1} attempts; check that the embedding "
                    "server is up and reachable from here at that URL, and its rate limits "
                    "(RAGSTORE_EMBED_CONCURRENCY=1 sends one request at a time)"
                )
            if pause is None:
                pause = self.backoff_s * (2**attempt)
            if stop is not None and stop.is_set():
                raise EmbeddingProviderError(f"{failure}; not retried: another batch failed")
            self._sleep(min(pause, MAX_BACKOFF_S))
            attempt += 1
            with self._lock:
                self.retries += 1

    def _send(self, body: dict[str, Any], count: int) -> tuple[httpx.Response, bytes]:
        """POST ``body``; the answer and its bytes, read within ``timeout_s`` in all and
        at most :func:`_answer_limit` of them.

        httpx's timeout bounds each read, not the answer: a server sending a byte every few
        seconds held an ingest or a search forever, and one sending hundreds of MB had them
        all read into memory before a word of it was checked. A slow answer raises
        :class:`httpx.ReadTimeout` (retried like any timeout); a huge one is refused."""
        deadline = time.monotonic() + self._timeout_s
        limit = _answer_limit(count, self.spec.dimension)
        client = self._client
        if client is None:  # the first request of a forked child
            with self._lock:
                if self._client is None:
                    self._client = httpx.Client(timeout=self._timeout)
                client = self._client
        with client.stream("POST", self.url, json=body, headers=self._headers()) as resp:
            chunks: list[bytes] = []
            size = 0
            for chunk in resp.iter_bytes():
                size += len(chunk)
                if size > limit:
                    raise EmbeddingProviderError(
                        f"{self.shown_url} answered HTTP {resp.status_code} with a body larger "
                        f"than {limit // (1024 * 1024)} MiB for {count} texts, far more than their "
                        "embeddings take; the server is broken: fix or replace it"
                    )
                chunks.append(chunk)
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout("the answer took longer than the timeout")
        return resp, b"".join(chunks)

    def _auth_hint(self, response: httpx.Response) -> str:
        """What to check when a basic-auth endpoint refuses the credentials (401): the
        variable they came from, which the server's own message cannot name."""
        if response.status_code != 401 or self.auth != "basic":
            return ""
        return f"; check the USER:PASSWORD in {self._key_env} (sent as HTTP basic auth)"

    def _masked(self, text: str) -> str:
        """``text`` with the API key blanked out: a server or proxy quoting the request's
        ``Authorization`` header in its error had the key copied into the exception, the
        CLI's output and the HTTP API's 502 body."""
        for secret in sorted(self._secrets, key=len, reverse=True):  # the pair before its part
            text = text.replace(secret, "***")
        return text

    def remote_vectors(self, texts: Sequence[str], stop: threading.Event | None = None) -> Vectors:
        """The server's vectors for ``texts``, in input order, as it sent them: one request,
        no dimension check and no normalising (what pinning a new endpoint reads).

        The answer is checked before it is believed (:func:`_answered_vectors`): one
        embedding per text, the ``index`` of each naming every text once, finite numbers
        within float32. Unchecked, a ``data`` that was not a list crashed with an
        AttributeError, two embeddings both marked ``index: 0`` stored the first text's
        vector for the second one too, and NaN or infinity (or 1e39, infinite as float32)
        reached the pin as a database error."""
        return _answered_vectors(self._post(texts, stop), len(texts), self.shown_url)

    def embed_texts(self, texts: Sequence[str]) -> Vectors:
        """Batches of ``batch_size``, up to ``concurrency`` of them in flight, the vectors
        in input order. The first batch goes alone while the server's answer format is not
        known yet (a refusal of base64 is learnt once, not by every batch). The first batch
        to fail is raised as soon as it fails: the batches not sent yet are dropped and
        those in flight stop retrying."""
        size = self.batch_size
        batches = [texts[i : i + size] for i in range(0, len(texts), size)]
        if self.concurrency == 1 or len(batches) <= 1:
            return super().embed_texts(texts)
        parts: list[Vectors] = []
        if not self._format_settled:
            parts.append(self.embed_batch(batches[0]))
            batches = batches[1:]
        stop = threading.Event()
        futures = [self._executor().submit(self._embed_batch, b, stop) for b in batches]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
            for f in futures:
                failure = f.exception() if f.done() else None
                if failure is not None:
                    raise failure
            parts.extend(f.result() for f in futures)
        finally:  # after a failure or an interrupt; once all are in, nothing is left to stop
            stop.set()
            for f in futures:
                f.cancel()
        return np.concatenate(parts)

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    max_workers=self.concurrency, thread_name_prefix="ragstore-embed"
                )
            return self._pool

    def embed_batch(self, texts: Sequence[str]) -> Vectors:
        return self._embed_batch(texts)

    def _embed_batch(self, texts: Sequence[str], stop: threading.Event | None = None) -> Vectors:
        if stop is not None and stop.is_set():
            raise EmbeddingProviderError("not sent: another batch failed")
        t0 = time.perf_counter()
        out = self.remote_vectors(texts, stop)
        # one answered request, its retries included: the endpoint's latency as callers see it
        metrics.observe_embedding_batch(len(texts), time.perf_counter() - t0)
        if out.shape[1] != self.spec.dimension:
            raise metrics.record_model_mismatch(
                ModelMismatchError(
                    f"model {self.spec.key}: expected {self.spec.dimension} dimensions, got "
                    f"{out.shape[1]} from {self.shown_url}; the server runs a different model than "
                    "the pin: point options.base_url at the pinned model, or pin the new one "
                    "with `ragstore models add` and re-embed with `ragstore models migrate`"
                )
            )
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        if self.spec.distance == "cosine" and not norms.all():
            # only the pin's probe was checked for zeros: one zero vector in a batch was
            # stored, its cosine distance to every query NaN and its chunk never found
            first = int(np.flatnonzero(norms[:, 0] == 0)[0])
            raise EmbeddingProviderError(
                f"{self.shown_url} answered a vector of zeros for text {first + 1} of the "
                f"{len(texts)} in its batch, which cosine "
                "cannot rank; the server or its model is broken: fix or replace it. "
                "Nothing of this batch was stored"
            )
        if self.spec.normalize:
            out /= np.maximum(norms, 1e-12)
        return out

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if self._client is not None:
            self._client.close()

    # -- tokens ------------------------------------------------------------------------

    @property
    def text_special_tokens(self) -> int:
        return 2 if self.tokenizer is not None else 0

    @property
    def encodes_on_cpu(self) -> bool:
        return False  # the endpoint's machine encodes

    @property
    def overlaps_rounds(self) -> bool:
        return self.concurrency > 1

    def count_text_tokens(self, texts: Sequence[str]) -> list[int]:
        if self.tokenizer is None:
            return [len(_WORDS.findall(t)) for t in texts]
        return tokenizer_counts(self.tokenizer, texts)

    def text_token_encodings(
        self, texts: Sequence[str], indexed: Sequence[bool] | None = None
    ) -> list[TokenEncoding] | None:
        if self.tokenizer is None:
            return None
        return tokenizer_encodings(self.tokenizer, texts, indexed)

    @property
    def joins_add_up(self) -> bool:
        return self.tokenizer is not None and tokenizer_joins_add_up(self.tokenizer)

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        if self.tokenizer is None:
            return [m.span() for m in _WORDS.finditer(text)]
        return tokenizer_spans(self.tokenizer, text)


def _concurrency(value: object, spec: ModelSpec) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CONCURRENCY:
        raise ModelError(
            f"model {spec.key}: options.concurrency must be a whole number from 1 to "
            f"{MAX_CONCURRENCY} (requests in flight at once), got {value!r}"
        )
    return value


def _answered_vectors(body: object, count: int, url: str) -> Vectors:
    """The ``count`` vectors of an embeddings answer, in input order (see
    :meth:`HttpEmbedder.remote_vectors`); any other answer is an
    :class:`EmbeddingProviderError` saying what was wrong with it."""
    items = body.get("data") if isinstance(body, dict) else None
    if not isinstance(items, list) or not all(isinstance(d, dict) for d in items):
        raise EmbeddingProviderError(f"{url} answered without a list of embeddings in 'data'")
    if len(items) != count:
        raise EmbeddingProviderError(f"{url} returned {len(items)} embeddings for {count} texts")
    indexes = [d.get("index") for d in items]
    if any(i is not None for i in indexes):
        if any(type(i) is not int for i in indexes) or sorted(indexes) != list(range(count)):
            shown = ", ".join(map(repr, indexes[:10])) + (", ..." if count > 10 else "")
            raise EmbeddingProviderError(
                f"{url} answered embeddings whose 'index' values ({shown}) do not name each "
                f"of its {count} texts once; the server is broken: fix or replace it"
            )
        items = sorted(items, key=lambda d: int(d["index"]))
    try:
        out = np.asarray([_vector(d.get("embedding")) for d in items], dtype=np.float64)
    except (TypeError, ValueError, binascii.Error):
        raise EmbeddingProviderError(
            f"{url} answered embeddings that are not lists of numbers of one length"
        ) from None
    if out.ndim != 2 or out.shape[1] == 0:
        raise EmbeddingProviderError(
            f"{url} answered embeddings that are not lists of numbers of one length"
        )
    if not np.isfinite(out).all() or (np.abs(out) > np.finfo(np.float32).max).any():
        raise EmbeddingProviderError(
            f"{url} answered embeddings holding NaN, infinite or out-of-range numbers, "
            "which no index can rank; the server or its model is broken: fix or replace it"
        )
    return out.astype(np.float32)


def _vector(embedding: object) -> Any:
    """One answered embedding: base64 of little-endian float32s, or a list of numbers."""
    if isinstance(embedding, str):
        raw = base64.b64decode(embedding, validate=True)
        if len(raw) % 4:
            raise ValueError("base64 embedding is not a whole number of float32s")
        return np.frombuffer(raw, dtype="<f4")
    return embedding


def _answer_limit(count: int, dimension: int) -> int:
    """The most bytes an answer for ``count`` texts may take: per text 256 KiB and 48 bytes
    a number of the pinned ``dimension`` (a float printed as JSON takes at most about 25),
    and 16 MiB over, for an error page or a header."""
    return 16 * 1024 * 1024 + count * (256 * 1024 + 48 * max(dimension, 0))


def _server_message(raw: bytes) -> str:
    """The error text an OpenAI-style server put in its body, cut to one short line."""
    try:
        body = json.loads(raw)
    except ValueError:
        text = raw.decode("utf-8", "replace")
    else:
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict):
            text = str(err.get("message", err))
        elif err is not None:
            text = str(err)
        else:
            text = str(body.get("detail", body)) if isinstance(body, dict) else str(body)
    text = " ".join(text.split())
    return text[:200]


def _load_tokenizer(where: str, spec: ModelSpec) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    path = resolve_path(where)
    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelError(
            f"model {spec.key}: cannot load the tokenizer from {path}: {exc}"
        ) from None
