"""The offline stand-in: a tiny SD3.5-shaped pipeline with random weights, built locally.

No model weights can be downloaded in CI, so the project proves its code on this pipeline. It has
every component of SD3.5 (MMDiT transformer, 16-channel VAE, flow-matching scheduler, CLIP-L and
CLIP-G with projections, T5) at toy sizes, tokenizers made here, and it is saved with
`save_pretrained` so it loads through exactly the same `from_pretrained` calls as the real models.
Its images are noise: it tests plumbing, never quality.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

# Bump when the architecture or tokenizers change, so a stale cached build is never reused.
TINY_VERSION = 2
STAND_IN_MARKER = "STAND_IN.txt"

# Every Linear of the transformer and T5 is a multiple of 64 wide: bitsandbytes' CPU kernels fail
# on smaller layers ("K must be even", "shape '[64, 0]' is invalid").
TRANSFORMER_CONFIG = dict(
    sample_size=32,
    patch_size=2,
    in_channels=16,
    out_channels=16,
    num_layers=2,
    attention_head_dim=16,
    num_attention_heads=4,
    joint_attention_dim=64,
    caption_projection_dim=64,
    pooled_projection_dim=64,
    pos_embed_max_size=96,
    qk_norm="rms_norm",
)
VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=["DownEncoderBlock2D"] * 4,
    up_block_types=["UpDecoderBlock2D"] * 4,
    block_out_channels=[8, 8, 8, 8],
    layers_per_block=1,
    norm_num_groups=4,
    latent_channels=16,
    # SD3.5's own latent normalisation, so latent-space code sees realistic constants.
    shift_factor=0.0609,
    scaling_factor=1.5305,
    use_quant_conv=False,
    use_post_quant_conv=False,
    sample_size=64,
)
CLIP_CONFIG = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=77,
    projection_dim=32,  # two encoders x 32 = the transformer's pooled_projection_dim of 64
    hidden_act="gelu",
)
T5_CONFIG = dict(
    d_model=64,
    d_kv=16,
    d_ff=128,
    num_layers=2,
    num_heads=4,
    feed_forward_proj="gated-gelu",
    relative_attention_num_buckets=8,
    relative_attention_max_distance=32,
    dropout_rate=0.0,
)

# A small, fixed corpus for the tokenizers: the prompts this collection uses, plus common words.
_CORPUS = """
a photo of a cat sitting on a red sofa in a sunny living room
children's birthday party with balloons and party hats and a big birthday cake
no birthday cake three children sitting at a dining table
there is a white table cloth on the table there are balloons in the background
the kids are wearing party hats the background is a sunny day at a park
a capybara wearing a suit holding a sign that reads hello world
an astronaut riding a horse on the moon highly detailed digital art
a watercolor painting of a lighthouse at dusk with dramatic clouds
portrait of an old fisherman cinematic lighting sharp focus 8k
blurry low quality ugly deformed watermark text signature
a bowl of fruit apples oranges bananas grapes on a wooden table
mountains lake forest sunrise fog reflection landscape photography
""".strip()
# Everyday English, so the stand-in's CLIP tokenizer gives about one token per word as the real
# one does (49,408 tokens learned from web captions) and the blog's prompts are not "truncated".
_EVERYDAY_WORDS = """
the be to of and a in that have i it for not on with he as you do at this but his by from they we
say her she or an will my one all would there their what so up out if about who get which go me
when make can like time no just him know take people into year your good some could them see other
than then now look only come its over think also back after use two how our work first well way
even new want because any these give day most us is are was were been has had did said made went
took saw came got very more many much such own same few little big small large long short high low
old young great right left last next early late good bad best better real full open close hot cold
warm cool dark light bright soft hard fast slow happy sad beautiful pretty cute funny strange quiet
loud clean dirty empty heavy thin thick wide deep round flat sharp smooth rough wet dry fresh
man woman men women child children boy girl baby kid kids family friend friends mother father sister
brother person people king queen knight wizard witch elf elves dwarf robot dragon monster ghost
angel fairy princess warrior soldier pirate doctor chef artist dancer student teacher farmer
house home room kitchen bedroom garden street road city town village castle tower bridge church
school shop market park beach sea ocean river lake island mountain hill valley desert field meadow
grass tree trees flower flowers leaf leaves rock stone sand snow ice rain cloud clouds sky sun moon
star stars night morning evening dawn dusk sunset sunrise winter spring summer autumn fall weather
water fire earth wind storm fog mist smoke light shadow color colour colors red blue green yellow
orange purple pink brown black white gray grey gold golden silver glowing neon pastel vivid
dog cat bird fish horse cow pig sheep lion tiger bear wolf fox rabbit deer owl eagle duck frog snake
butterfly bee mouse elephant monkey giraffe penguin dolphin whale turtle hippo hippopotamus
table chair sofa bed door window wall floor roof lamp book books cup glass plate bowl bottle box bag
hat hats shirt dress coat shoes boots glasses hair eyes face hands hand head arm legs smile
car bus train plane boat ship bike bicycle truck rocket
food bread cake cakes pie apple banana cheese coffee tea milk juice soup pizza candy chocolate
cookie cookies breakfast lunch dinner waffle butter syrup pancake pancakes
holding wearing sitting standing walking running flying swimming reading writing playing eating
drinking looking smiling laughing dancing singing riding jumping sleeping painting cooking floating
photo photograph picture image painting drawing sketch illustration render portrait landscape
style art artwork detailed realistic cinematic dramatic lighting studio quality resolution focus
background foreground scene view close closeup shot wide angle lens camera depth field bokeh
oil acrylic watercolor pencil ink digital anime cartoon comic pixel vintage retro modern futuristic
fantasy magical whimsical creative hybrid creature mix basking amidst themed features distinctive
bulky body shape usual skin resembles crispy griddle textured familiar grid pattern square filled
glistening sheen environment combines natural habitat elements setting oversized utensils plates
peeking lush foliage towering pepper mill tree rises fantastical world casts glow entire should
evoke sense playful absurdity culinary melted snowy birch
""".split()



def default_tiny_dir() -> Path:
    """Where the stand-in is cached: $SD35_TINY_DIR, else ~/.cache/sd35-notebooks/tiny-sd35-v{N}."""
    if os.environ.get("SD35_TINY_DIR"):
        return Path(os.environ["SD35_TINY_DIR"])
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "sd35-notebooks" / f"tiny-sd35-v{TINY_VERSION}"


def is_stand_in(folder) -> bool:
    """True when `folder` holds the random-weight stand-in (it carries a marker file)."""
    return (Path(folder) / STAND_IN_MARKER).is_file()


def tiny_pipeline_dir(folder=None) -> Path:
    """Return a folder holding the stand-in, building it there first if it is not there yet."""
    folder = Path(folder) if folder is not None else default_tiny_dir()
    return _build_once(folder, "model_index.json", save_tiny_pipeline)


def _build_once(folder: Path, index_file: str, save) -> Path:
    """Run `save(scratch)` unless `folder` already holds a finished stand-in build, then move it in.

    The build goes to a temporary folder that is renamed into place, so an interrupted build never
    leaves a half-written model behind, and two processes building at once both end up valid.
    """
    if (folder / index_file).is_file() and is_stand_in(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".tiny-build-", dir=folder.parent))
    try:
        save(scratch)
        try:
            scratch.rename(folder)
        except OSError:
            # Another process finished first: keep its build, drop ours.
            if not (folder / index_file).is_file():
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return folder


def save_tiny_pipeline(folder) -> Path:
    """Build the stand-in with seeded random weights and `save_pretrained` it to `folder`."""
    pipe = build_tiny_pipeline()
    folder = Path(folder)
    pipe.save_pretrained(folder)
    (folder / STAND_IN_MARKER).write_text(
        "Offline stand-in for Stable Diffusion 3.5: random weights, images are noise.\n"
        "Built by helpers/stand_in.py; same components and file layout as the real models.\n"
    )
    return folder


def build_tiny_pipeline():
    """Return an in-memory `StableDiffusion3Pipeline` with the stand-in's seeded random weights."""
    import torch
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip_tokenizer = _make_clip_tokenizer(tmp / "clip")
        t5_tokenizer = _make_t5_tokenizer(tmp / "t5")

        def clip(seed):
            torch.manual_seed(seed)
            config = CLIPTextConfig(
                vocab_size=len(clip_tokenizer),
                bos_token_id=clip_tokenizer.bos_token_id,
                eos_token_id=clip_tokenizer.eos_token_id,
                pad_token_id=clip_tokenizer.pad_token_id,
                **CLIP_CONFIG,
            )
            return CLIPTextModelWithProjection(config).eval()

        text_encoder, text_encoder_2 = clip(1), clip(2)
        torch.manual_seed(3)
        text_encoder_3 = T5EncoderModel(
            T5Config(
                vocab_size=len(t5_tokenizer),
                pad_token_id=t5_tokenizer.pad_token_id,
                eos_token_id=t5_tokenizer.eos_token_id,
                decoder_start_token_id=t5_tokenizer.pad_token_id,
                **T5_CONFIG,
            )
        ).eval()
        torch.manual_seed(4)
        transformer = SD3Transformer2DModel(**TRANSFORMER_CONFIG).eval()
        torch.manual_seed(5)
        vae = AutoencoderKL(**VAE_CONFIG).eval()
        scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0)
        return StableDiffusion3Pipeline(
            transformer=transformer,
            scheduler=scheduler,
            vae=vae,
            text_encoder=text_encoder,
            tokenizer=clip_tokenizer,
            text_encoder_2=text_encoder_2,
            tokenizer_2=clip_tokenizer,
            text_encoder_3=text_encoder_3,
            tokenizer_3=t5_tokenizer,
        )


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte → printable-character table."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars)))


def _make_clip_tokenizer(folder: Path):
    """A byte-level BPE tokenizer in CLIP's format: every byte, with and without the word end
    marker, plus merges learned until every word of the corpus and the everyday words is one
    token, as most everyday English words are in the real CLIP vocabulary."""
    import re
    from collections import Counter

    from transformers import CLIPTokenizer

    symbols = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for s in symbols + [s + "</w>" for s in symbols]:
        vocab.setdefault(s, len(vocab))
    # CLIP's own pre-tokenizer split: letter runs, single digits, punctuation, "'s"-style endings.
    text = _CORPUS.lower() + " " + " ".join(_EVERYDAY_WORDS)
    unique = sorted(set(re.findall(r"'s|'t|'re|'ve|'m|'ll|'d|[a-z]+|[0-9]|[^\sa-z0-9]+", text)))
    words = [list(w[:-1]) + [w[-1] + "</w>"] for w in unique]
    pairs = Counter((a, b) for w in words for a, b in zip(w, w[1:]))
    merges = []
    while pairs:  # learn merges until every word is a single token; ties break on the pair itself
        (a, b), _count = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))
        merges.append(f"{a} {b}")
        vocab.setdefault(a + b, len(vocab))
        for w in words:
            if a not in w or len(w) < 2:
                continue
            pairs.subtract(zip(w, w[1:]))
            i = 0
            while i < len(w) - 1:
                if w[i] == a and w[i + 1] == b:
                    w[i : i + 2] = [a + b]
                i += 1
            pairs.update(zip(w, w[1:]))
        pairs = +pairs  # drop pairs that no longer occur
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab.setdefault(special, len(vocab))
    folder.mkdir(parents=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "CLIPTokenizer",
                "model_max_length": 77,
                "bos_token": "<|startoftext|>",
                "eos_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>",
                "do_lower_case": True,
            }
        )
    )
    # transformers 5 ignores vocab_file/merges_file passed to the constructor: load the folder.
    return CLIPTokenizer.from_pretrained(folder)


def _make_t5_tokenizer(folder: Path):
    """A sentencepiece unigram model trained here on the corpus, wrapped as T5's tokenizer."""
    import sentencepiece as spm
    from transformers import T5Tokenizer

    folder.mkdir(parents=True)
    corpus = folder / "corpus.txt"
    corpus.write_text(_CORPUS + "\n")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(folder / "spiece"),
        vocab_size=160,
        model_type="unigram",
        hard_vocab_limit=False,  # the corpus is too small for an exact vocabulary size
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
    )
    corpus.unlink()
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "T5Tokenizer", "model_max_length": 512, "extra_ids": 0})
    )
    return T5Tokenizer.from_pretrained(folder)


# A tiny CLIP for scoring images offline, in the same format as openai/clip-vit-large-patch14.
CLIP_SCORER_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                        max_position_embeddings=77)
CLIP_SCORER_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                          image_size=32, patch_size=8)


def default_tiny_clip_dir() -> Path:
    """Where the tiny scoring CLIP is cached: beside the stand-in pipeline."""
    return default_tiny_dir().with_name(default_tiny_dir().name + "-clip")


def tiny_clip_dir(folder=None) -> Path:
    """Return a folder holding a random-weight `CLIPModel` + `CLIPProcessor`, building it first if
    needed; it loads through the same `from_pretrained` calls as openai/clip-vit-large-patch14."""
    folder = Path(folder) if folder is not None else default_tiny_clip_dir()
    return _build_once(folder, "config.json", _save_tiny_clip)


def _save_tiny_clip(folder: Path) -> None:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = _make_clip_tokenizer(Path(tmp) / "clip")
        config = CLIPConfig(
            text_config=dict(
                vocab_size=len(tokenizer),
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                **CLIP_SCORER_TEXT,
            ),
            vision_config=CLIP_SCORER_VISION,
            projection_dim=32,
        )
        torch.manual_seed(6)
        model = CLIPModel(config).eval()
        size = CLIP_SCORER_VISION["image_size"]
        image_processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
        processor = CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
    (folder / STAND_IN_MARKER).write_text("Offline stand-in for a CLIP scorer: random weights, scores are noise.\n")
