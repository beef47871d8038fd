"""The local embedder's own encode path against sentence-transformers' ``encode``."""

from __future__ import annotations

import numpy as np
import torch

from ragstore.embedding.local import SentenceTransformerEmbedder
from ragstore.embedding.registry import TRUNCATED_MODEL, load_embedder, resolve_spec

TEXTS = [
    "Tomatoes need full sun and deep watering.",
    "x",
    "A much longer passage about the repair of DNA double-strand breaks by homologous "
    "recombination, which needs a sister chromatid and so happens in S and G2 phases. " * 6,
    "Prune roses in late winter, just above an outward-facing bud.",
    "",
    "Beta-blockers lower mortality after myocardial infarction.",
]


def _local(name: str, batch_size: int = 4) -> SentenceTransformerEmbedder:
    embedder = load_embedder(resolve_spec(name), device="cpu", batch_size=batch_size)
    assert isinstance(embedder, SentenceTransformerEmbedder)
    return embedder


def test_vectors_match_sentence_transformers_encode_in_the_callers_order() -> None:
    embedder = _local("all-MiniLM-L6-v2")
    ours = embedder.embed_texts(TEXTS)
    theirs = embedder.model.encode(
        TEXTS, batch_size=4, normalize_embeddings=True, convert_to_numpy=True
    )
    assert ours.shape == (len(TEXTS), 384) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    # one text alone gets the vector it gets in a batch (padding does not leak in)
    np.testing.assert_allclose(embedder.embed_texts([TEXTS[2]])[0], ours[2], atol=1e-5)


def test_truncated_spec_keeps_the_first_dimensions_renormalised() -> None:
    full = _local("all-MiniLM-L6-v2").embed_texts(TEXTS)
    cut = _local(TRUNCATED_MODEL).embed_texts(TEXTS)
    expected = full[:, :256] / np.linalg.norm(full[:, :256], axis=1, keepdims=True)
    assert cut.shape == (len(TEXTS), 256)
    np.testing.assert_allclose(cut, expected, atol=1e-5)


def test_batches_are_cut_by_token_count_with_preprocess_features() -> None:
    """Texts are tokenized once and batched by token count: the features equal the model's
    own ``preprocess`` of each batch, and padding is what token order leaves,
    where character order would pad short-character, many-token texts with long ones."""
    embedder = _local("all-MiniLM-L6-v2", batch_size=3)
    assert embedder._inputs is not None  # the fast tokenizer's path, not preprocess
    texts = [("a " * n).strip() for n in (5, 40, 9, 300)] + [
        "internationalization " * n for n in (4, 30, 2)
    ]
    tokens = embedder.count_tokens(texts)
    padded = 0
    for idx, features in embedder._batches(texts):
        theirs = embedder.model.preprocess([texts[i] for i in idx])
        for name in ("input_ids", "token_type_ids", "attention_mask"):
            assert torch.equal(features[name], theirs[name]), name
        mask = features["attention_mask"]
        padded += int(mask.numel() - mask.sum())
    assert max(tokens) > 256  # the long one is truncated like preprocess truncates it
    by_chars = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    char_padding = sum(
        len(batch) * max(min(tokens[i], 256) for i in batch)
        - sum(min(tokens[i], 256) for i in batch)
        for batch in (by_chars[k : k + 3] for k in range(0, len(texts), 3))
    )
    assert padded < char_padding


def test_one_text_goes_straight_through_the_model_with_the_batch_vector() -> None:
    """A single text (a search's query) skips the batching and the module stack, and gets
    the vector the same text gets inside an ingest batch, for full and truncated specs."""
    for name in ("all-MiniLM-L6-v2", TRUNCATED_MODEL):
        embedder = _local(name)
        assert embedder._single is not None
        batch = embedder.embed_texts(TEXTS)
        for i, text in enumerate(TEXTS):
            alone = embedder.embed_texts([text])
            assert alone.shape == (1, batch.shape[1]) and alone.dtype == np.float32
            np.testing.assert_allclose(alone[0], batch[i], rtol=0, atol=1e-6)
        query = "Which drugs lower mortality after a heart attack?"
        np.testing.assert_allclose(
            embedder.embed_query(query + name), embedder.embed([query + name])[0], atol=1e-6
        )


def test_a_model_pooled_otherwise_keeps_the_module_stack() -> None:
    """The single-text path mean-pools: a model that pools the CLS token is not given it."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    from ragstore.embedding.local import _Inputs, _SingleText

    embedder = _local("all-MiniLM-L6-v2")
    mean = embedder.model
    cls_pooled = SentenceTransformer(modules=[mean[0], Pooling(384, pooling_mode="cls")])
    assert _SingleText.of(mean, _Inputs.of(mean)) is not None
    assert _SingleText.of(cls_pooled, _Inputs.of(cls_pooled)) is None


QUERIES = [
    "Which drugs lower mortality after a heart attack?",
    "0-dimensional biomaterials show inductive properties.",
    "  Ünïcode, CAFÉ and 中文\twith\u00a0odd   spacing.  ",
    "",
    " ",
    "?",
    "word " * 600,  # far past max_tokens: truncated at 256 like encode truncates it
    "fs.readFile(path[, options], callback) => { return `${a}` }",
]


def test_a_bert_query_takes_the_written_out_forward_and_gets_encodes_vector() -> None:
    """MiniLM is a plain BERT: a single text is encoded by ``BertForward`` (no module
    stack), and its vector is sentence-transformers' ``encode`` of the same text within
    1e-6, for the full and the truncated spec, including a text truncated at max_tokens."""
    from ragstore.embedding.bert_forward import BertForward

    for name in ("all-MiniLM-L6-v2", TRUNCATED_MODEL):
        embedder = _local(name)
        assert embedder._single is not None
        assert isinstance(embedder._single.forward, BertForward)
        theirs = embedder.model.encode(
            QUERIES, batch_size=1, normalize_embeddings=True, convert_to_numpy=True
        )
        dim = embedder.spec.dimension
        expected = theirs[:, :dim] / np.linalg.norm(theirs[:, :dim], axis=1, keepdims=True)
        for text, want in zip(QUERIES, expected, strict=True):
            np.testing.assert_allclose(embedder.embed_texts([text])[0], want, rtol=0, atol=1e-6)


def test_the_written_out_forward_equals_bert_model_on_another_shape() -> None:
    """Not tied to MiniLM's sizes: a small random BERT (3 heads, 2 layers) gives its own
    ``last_hidden_state`` mean; a BERT with another activation is refused."""
    from transformers import BertConfig, BertModel

    from ragstore.embedding.bert_forward import BertForward

    torch.manual_seed(7)
    sizes = dict(
        vocab_size=60,
        hidden_size=48,
        num_hidden_layers=2,
        num_attention_heads=3,
        intermediate_size=96,
        max_position_embeddings=40,
    )
    model = BertModel(BertConfig(**sizes)).eval()
    forward = BertForward.of(model)
    assert forward is not None
    with torch.inference_mode():
        for n in (1, 7, 40):
            ids = torch.randint(0, 60, (1, n))
            hidden = model(input_ids=ids).last_hidden_state
            torch.testing.assert_close(forward(ids), hidden.mean(dim=1), rtol=0, atol=1e-6)
    relu = BertModel(BertConfig(**sizes, hidden_act="relu")).eval()
    assert BertForward.of(relu) is None
    assert BertForward.of(model.train()) is None


def test_a_model_whose_code_differs_from_its_config_keeps_its_own_forward() -> None:
    """A BERT whose feed-forward does not compute what its config says (tanh GELU under
    ``hidden_act="gelu"``) passes the written-out forward's checks but not the probe, so a
    query goes through the Hugging Face model, with the model's own vector."""
    import copy

    from sentence_transformers import SentenceTransformer

    from ragstore.embedding.bert_forward import BertForward
    from ragstore.embedding.local import _Inputs, _SingleText

    altered = copy.deepcopy(_local("all-MiniLM-L6-v2").model)
    assert isinstance(altered, SentenceTransformer)
    for layer in altered[0].auto_model.encoder.layer:
        layer.intermediate.intermediate_act_fn = torch.nn.GELU(approximate="tanh")
    assert BertForward.of(altered[0].auto_model) is not None  # its checks pass
    single = _SingleText.of(altered, _Inputs.of(altered))
    assert single is not None and single.forward is None
    theirs = altered.encode(QUERIES[:3], batch_size=1, convert_to_numpy=True)
    with torch.inference_mode():
        for text, want in zip(QUERIES[:3], theirs, strict=True):
            np.testing.assert_allclose(single(text)[0], want, rtol=0, atol=1e-6)
