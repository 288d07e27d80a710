"""Write a tiny random-weight Llama twice: as a Hugging Face folder (vLLM) and as GGUF (llama.cpp).

Run with the vLLM virtualenv's Python, which has torch, transformers, tokenizers
and gguf: `python real_models.py OUT_DIR` writes OUT_DIR/hf and OUT_DIR/tiny.gguf.
No hub access is needed: the tokenizer is trained here on a few sentences.

The model is small but not tiny (8 layers of 512): llama.cpp generates a
2-layer model at thousands of tokens a second, too fast for a test to close a
stream or read a gauge mid-answer; this one runs at about a hundred.

The weights are random, so the text is noise, but lengths are exact: the
residual stream carries a constant first dimension (no layer writes it) and
the output head turns it into a large negative logit for the end-of-text
token, so the model never stops on its own and every answer runs to
`max_tokens`.  The same trick keeps it off the other special tokens, off byte
tokens that are not UTF-8 on their own and off whitespace-only tokens, so every
token adds visible text.  The same weights go into both files.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

HIDDEN = 512
LAYERS = 8
HEADS = 8
FFN = 1536
CONTEXT = 4096
VOCAB = 400
EPS = 1e-5
SPECIALS = ["<s>", "</s>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "tell me about the quiet sea and the bright stars over green hills",
    "once upon a time seven small boats carried weather reports to distant towns",
    "the quick brown fox jumps over a lazy dog while rivers watch the sky",
    "what is the weather in Oslo today? sunny, with a cold wind from the north",
    "one two three four five six seven eight nine ten words and numbers 0123456789",
    '{"city": "Oslo", "days": 1} get_weather function call arguments json',
]


def tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE())
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    raw.train_from_iterator(CORPUS * 20, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def never_generated(tok: Any) -> list[int]:
    """Special tokens, tokens whose bytes are not text by themselves, and whitespace."""
    from tokenizers.pre_tokenizers import ByteLevel

    unbyte = {char: byte for byte, char in enumerate(_byte_chars(ByteLevel.alphabet()))}
    banned = []
    for token, index in tok.get_vocab().items():
        if token in SPECIALS:
            banned.append(index)
            continue
        try:
            text = bytes(unbyte[char] for char in token).decode("utf-8")
        except (KeyError, UnicodeDecodeError):
            banned.append(index)
            continue
        if not text.strip():
            # Whitespace alone: JSON held to a schema allows it anywhere, and a random
            # model would fill a forced tool call's arguments with it.
            banned.append(index)
    return banned


def _byte_chars(alphabet: list[str]) -> list[str]:
    """GPT-2's byte-to-character table, in byte order (printable bytes map to themselves)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    table, extra = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + extra)
            extra += 1
    assert set(table.values()) == set(alphabet)
    return [table[byte] for byte in range(256)]


def weights(vocab: int, banned: list[int]) -> dict[str, np.ndarray]:
    """GGUF-named float32 tensors; dimension 0 of the residual stream is a constant."""
    rng = np.random.default_rng(0)

    def normal(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    embed = normal(vocab, HIDDEN)
    embed[:, 0] = 50.0
    out = normal(vocab, HIDDEN)
    out[:, 0] = 1.0
    out[banned, 0] = -1.0
    tensors = {
        "token_embd.weight": embed,
        "output_norm.weight": np.ones(HIDDEN, np.float32),
        "output.weight": out,
    }
    for i in range(LAYERS):
        attn_out = normal(HIDDEN, HIDDEN)
        down = normal(HIDDEN, FFN)
        attn_out[0, :] = 0.0  # no layer writes dimension 0
        down[0, :] = 0.0
        tensors |= {
            f"blk.{i}.attn_norm.weight": np.ones(HIDDEN, np.float32),
            f"blk.{i}.attn_q.weight": normal(HIDDEN, HIDDEN),
            f"blk.{i}.attn_k.weight": normal(HIDDEN, HIDDEN),
            f"blk.{i}.attn_v.weight": normal(HIDDEN, HIDDEN),
            f"blk.{i}.attn_output.weight": attn_out,
            f"blk.{i}.ffn_norm.weight": np.ones(HIDDEN, np.float32),
            f"blk.{i}.ffn_gate.weight": normal(FFN, HIDDEN),
            f"blk.{i}.ffn_up.weight": normal(FFN, HIDDEN),
            f"blk.{i}.ffn_down.weight": down,
        }
    return tensors


HF_NAMES = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}


def hf_name(name: str) -> str:
    parts = name.removesuffix(".weight").split(".")
    if parts[0] == "blk":
        return f"model.layers.{parts[1]}.{HF_NAMES[parts[2]]}.weight"
    return f"{HF_NAMES[parts[0]]}.weight"


def write_hf(folder: Path, tok: Any, tensors: dict[str, np.ndarray]) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=HIDDEN,
        intermediate_size=FFN,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=HEADS,
        max_position_embeddings=CONTEXT,
        rms_norm_eps=EPS,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    model = LlamaForCausalLM(config)
    state = {hf_name(name): torch.from_numpy(array) for name, array in tensors.items()}
    model.load_state_dict(state, strict=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)


def write_gguf(path: Path, tok: Any, tensors: dict[str, np.ndarray]) -> None:
    import json

    import gguf

    raw = json.loads(tok.backend_tokenizer.to_str())
    vocab: dict[str, int] = raw["model"]["vocab"]
    for added in raw["added_tokens"]:
        vocab[added["content"]] = added["id"]
    tokens = [token for token, _ in sorted(vocab.items(), key=lambda item: item[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in raw["model"]["merges"]]
    special = set(SPECIALS)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny")
    writer.add_context_length(CONTEXT)
    writer.add_embedding_length(HIDDEN)
    writer.add_block_count(LAYERS)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(HEADS)
    writer.add_rope_dimension_count(HIDDEN // HEADS)
    writer.add_layer_norm_rms_eps(EPS)
    writer.add_vocab_size(len(tokens))
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types(
        [gguf.TokenType.CONTROL if token in special else gguf.TokenType.NORMAL for token in tokens]
    )
    writer.add_token_merges(merges)
    writer.add_bos_token_id(tok.bos_token_id)
    writer.add_eos_token_id(tok.eos_token_id)
    writer.add_add_bos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def main(out: Path) -> None:
    tok = tokenizer()
    tensors = weights(len(tok), never_generated(tok))
    write_hf(out / "hf", tok, tensors)
    write_gguf(out / "tiny.gguf", tok, tensors)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
