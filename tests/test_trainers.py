"""TRL's SFTTrainer trains on the exported folder as it is, in the `messages` (default) and the
`prompt_completion` configs: a tiny Llama built from a config, a word-level tokenizer trained
on the export's own text with a chat template, a few steps on the CPU, nothing downloaded."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
from trl import SFTConfig, SFTTrainer

from pipeline import export_stage, run_recipe

from .conftest import write

# A system turn on every record and multi-turn few-shot records (exemplars as earlier turns).
RECIPE = """
name: trainers
seed: 5
sources: [esnli, gsm8k]
mixing: {strategy: proportional, cap: 40}
variants: {zero_shot: 0.4, few_shot: 0.4, cot: 0.2}
few_shot: {k: 2, format: multi_turn}
system: "You are a careful assistant."
"""
SPECIAL = ["<pad>", "<unk>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
# Assistant turns inside {% generation %}: what TRL's assistant_only_loss masks by.
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<|' + m['role'] + '|>' }}"
    "{% if m['role'] == 'assistant' %}"
    "{% generation %}{{ m['content'] + '<|end|>' }}{% endgeneration %}"
    "{% else %}{{ m['content'] + '<|end|>' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("trainers")
    run_recipe(write(root / "trainers.yaml", RECIPE), root / "run")
    export_stage(root / "run", formats=["messages", "prompt_completion"])
    return root / "run" / "dataset"


@pytest.fixture(scope="module")
def tokenizer(folder: Path) -> PreTrainedTokenizerFast:
    """A word-level tokenizer whose vocabulary is the export's own words."""
    train = datasets.load_dataset(str(folder), split="train")
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    texts: Iterator[str] = (m["content"] for row in train["messages"] for m in row)
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=SPECIAL))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        eos_token="<|end|>",
        chat_template=CHAT_TEMPLATE,
    )


def _train(
    tokenizer: PreTrainedTokenizerFast, dataset: Any, out: Path, **config: Any
) -> tuple[SFTTrainer, list[float]]:
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )
    args = SFTConfig(
        output_dir=str(out),
        max_steps=3,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        max_length=2048,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        **config,
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer)
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return trainer, losses


def _trained_ids(row: dict[str, Any]) -> list[int]:
    return [label for label in row["labels"] if label != -100]


def _few_shot_row(dataset: Any) -> int:
    return next(i for i, row in enumerate(dataset["variant"]) if row.startswith("few_shot"))


def test_sft_trains_on_the_messages_config(
    folder: Path, tokenizer: PreTrainedTokenizerFast, tmp_path: Path
) -> None:
    train = datasets.load_dataset(str(folder), split="train")
    trainer, losses = _train(tokenizer, train, tmp_path, assistant_only_loss=True)
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses)
    # Loss on every assistant turn, the exemplars' answers included; none on the prompts.
    i = _few_shot_row(train)
    messages = train[i]["messages"]
    answers = [m["content"] for m in messages if m["role"] == "assistant"]
    assert len(answers) == 3
    expected = [t for a in answers for t in tokenizer(a + "<|end|>")["input_ids"]]
    assert _trained_ids(trainer.train_dataset[i]) == expected


def test_sft_trains_on_the_prompt_completion_config_and_masks_the_prompt(
    folder: Path, tokenizer: PreTrainedTokenizerFast, tmp_path: Path
) -> None:
    train = datasets.load_dataset(str(folder), "prompt_completion", split="train")
    trainer, losses = _train(tokenizer, train, tmp_path)
    assert trainer.completion_only_loss  # TRL's default for prompt-completion data
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses)
    # Loss on the completion only: the system turn, the exemplar turns and the query are
    # the context, unscored.
    i = _few_shot_row(train)
    assert [m["role"] for m in train[i]["prompt"]] == ["system", *["user", "assistant"] * 2, "user"]
    completion = train[i]["completion"][0]["content"]
    row = trainer.train_dataset[i]
    assert _trained_ids(row) == tokenizer(completion + "<|end|>")["input_ids"]
    prompt = tokenizer.apply_chat_template(train[i]["prompt"], add_generation_prompt=True)
    assert row["input_ids"][: len(prompt["input_ids"])] == prompt["input_ids"]

