"""The cases `python tests/bad_inputs/probe.py` tries, by area; each states its expectation.

`E(...)`: a bad input; a clear early error is right (naming one of `names`), or, with `check=`,
a returned value that the check accepts (the input was understood correctly). `OK(...)`: a valid
edge input; it must return and `check(result, ctx)` hold. Case functions get a Context
(`ctx.pipe`, `ctx.result`, `ctx.clip`, `ctx.tmp`, `ctx.protect`, `ctx.readonly`).
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import errno
import io
import json
import os
import re
import resource
import signal
from pathlib import Path

from probe_case import FAKE_TOKEN, HEAVY, Case

from helpers.output_folders import PARTIAL

NAN, INF = float("nan"), float("inf")
SMALL = dict(height=32, width=32, num_inference_steps=2)


def E(area, name, call, *names, item="", check=None, timeout=30.0, after=None):
    return Case(area, name, call, "error", tuple(names), check, after, False, timeout, item)


def OK(area, name, call, check=None, item="", timeout=30.0, after=None):
    return Case(area, name, call, "ok", (), check, after, False, timeout, item)


def DISK(area, name, call, after, check=None, item="", timeout=60.0):
    """A full disk or an interrupt: any error is fine, as long as `after` finds nothing lost."""
    return Case(area, name, call, "error", (), check, after, True, timeout, item)


# ---- simulated full disks -----------------------------------------------------------------------

class _WriteCounter:
    def __init__(self, n: int):
        self.n = n


class _FullFile:
    """A file opened for writing on a disk with `budget` bytes left: write() stores what fits, then
    raises OSError(ENOSPC), as write(2) does on a full disk."""

    def __init__(self, f, budget: list):
        self._f, self._budget = f, budget

    def write(self, data):
        size = len(data.encode() if isinstance(data, str) else data)
        if isinstance(self._budget[0], _WriteCounter):
            self._budget[0].n -= 1
            room = size if self._budget[0].n > 0 else size // 2
            if self._budget[0].n > 0:
                return self._f.write(data)
        else:
            room = self._budget[0]
        if size <= room:
            self._budget[0] -= size
            return self._f.write(data)
        if room > 0:
            part = data[:room] if isinstance(data, (bytes, bytearray)) else data.encode()[:room].decode(errors="ignore")
            self._f.write(part)
            self._f.flush()
        self._budget[0] = 0
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()

    def __iter__(self):
        return iter(self._f)

    def __getattr__(self, name):
        return getattr(self._f, name)


@contextlib.contextmanager
def full_disk(pattern: str, budget: int = 0, fail_at_write: int | None = None):
    """Within the block, files opened for writing whose name matches `pattern` (a regex) sit on a
    disk with `budget` bytes left (shared by all of them); or, with `fail_at_write=n`, the disk
    fills during the n-th write() to them (half of that write lands). Patches builtins.open and
    io.open, which pathlib, csv and json all write through."""
    original, original_write = io.open, os.write
    left = [budget if fail_at_write is None else _WriteCounter(fail_at_write)]

    def patched(file, mode="r", *args, **kwargs):
        f = original(file, mode, *args, **kwargs)
        if any(m in mode for m in "wax+") and _matches(pattern, file):
            return _FullFile(f, left)
        return f

    def patched_write(fd, data):  # os.write: append_row's writer
        if isinstance(fd, int) and _matches(pattern, fd):
            return _FullFile(_FdWriter(fd, original_write), left).write(bytes(data))
        return original_write(fd, data)

    builtins.open = io.open = patched  # os.fdopen (write_atomically's writer) opens through io.open
    os.write = patched_write
    try:
        yield
    finally:
        builtins.open = io.open = original
        os.write = original_write


def _matches(pattern: str, file) -> bool:
    """Whether `file` (a path, or an open descriptor) is named by `pattern`; a temporary
    ".NAME.partial-xxxx" of write_atomically counts as NAME, since a full disk hits it."""
    try:
        name = Path(os.readlink(f"/proc/self/fd/{file}") if isinstance(file, int) else str(file)).name
    except OSError:
        return False
    if PARTIAL in name and name.startswith("."):
        name = name[1:name.rindex(PARTIAL)]
    return re.search(pattern, name) is not None


class _FdWriter:
    """An open descriptor as the file object _FullFile wraps."""

    def __init__(self, fd: int, write):
        self.fd, self._write = fd, write

    def write(self, data: bytes) -> int:
        return self._write(self.fd, data)

    def flush(self):
        pass


@contextlib.contextmanager
def file_size_limit(limit: int):
    """Within the block, no file of this process can grow past `limit` bytes (RLIMIT_FSIZE): any
    writer, also C or Rust code (safetensors), gets OSError EFBIG after the part that fit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


class Interrupt:
    """Raise KeyboardInterrupt at the `n`th transformer call from now (a reader pressing Stop)."""

    def __init__(self, n: int):
        self.at = HEAVY["steps"] + n
        self.hook_original = None

    def __enter__(self):
        import torch

        at = self.at

        def hook(module, args):
            if HEAVY["steps"] >= at:
                raise KeyboardInterrupt("interrupted by the probe")

        self.handle = torch.nn.modules.module.register_module_forward_pre_hook(
            lambda m, a: hook(m, a) if type(m).__name__ == "SD3Transformer2DModel" else None)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


# ---- small checks -------------------------------------------------------------------------------

def is_image(size=(32, 32)):
    def check(result, ctx):
        image = getattr(result, "image", None)
        return True if image is not None and image.size == size else f"image size {getattr(image, 'size', None)}"
    return check


def equals(expected):
    def check(result, ctx):
        return True if result == expected else f"got {result!r:.120}, expected {expected!r:.120}"
    return check


def recipe_has(**values):
    def check(result, ctx):
        recipe = result.recipe
        try:
            json.dumps(recipe, allow_nan=False)
        except (TypeError, ValueError) as e:
            return f"recipe is not plain JSON: {e}"
        for k, v in values.items():
            if recipe.get(k) != v:
                return f"recipe {k}={recipe.get(k)!r}, expected {v!r}"
        return True
    return check


def no_files_left(folder_name="", pattern="*"):
    def after(ctx):
        folder = ctx.tmp / folder_name
        partial = [p for p in folder.rglob(pattern) if p.is_file()]
        return f"left partial files: {', '.join(p.name for p in partial)}" if partial else None
    return after


def nothing_outside(ctx):
    """Lost work of a path escape: a file written next to the case folder instead of inside it."""
    outside = [p for p in ctx.tmp.parent.glob("escape*")] + [p for p in Path("/tmp").glob("probe-abs-escape*")]
    for p in outside:
        p.unlink()
    return None


def gen(ctx, **kwargs):
    import helpers

    return helpers.generate(ctx.pipe, **{"prompt": "a cat", **SMALL, **kwargs})


def _started(ctx, value):
    ctx.start()
    return value


def _cancelled(ctx):
    from helpers.errors import GenerationCancelled

    try:
        gen(ctx, callback=lambda step, total, latents: True)
    except GenerationCancelled:
        return "cancelled"
    return "not cancelled"


def fresh_pipe():
    import helpers

    pipe = helpers.load_pipeline("tiny", keep_previous=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe



# ---- generate ---------------------------------------------------------------------------------------

ODD_PROMPTS = {
    "5000 characters": "a cat " * 833, "emoji and CJK": "猫 🐱 a cat", "right-to-left": "قطة على سجادة",
    "NUL character": "a\x00cat", "line starting Negative prompt:": "a cat\nNegative prompt: dog",
    "leading quote": '"a cat" on a mat', "separators": "a cat, b: c, Steps: 99", "surrounding spaces": "  a cat  ",
    "only newlines inside": "a\n\n\ncat", "tab": "a\tcat", "zero-width joiner": "a\u200dcat",
    "combining marks": "c\u0301a\u0300t", "HTML": "<script>alert(1)</script>", "backslashes": "a\\cat\\n",
    "JSON-like": '{"seed": 5}', "a URL": "https://example.com/?q=a+cat&x=1",
}


def generate_cases():
    import numpy as np
    import torch

    cases = []
    a = "generate"
    for label, pipe in (("None", None), ("a preset name", "tiny"), ("an int", 123), ("an object", object())):
        cases.append(E(a, f"pipe={label}", lambda c, p=pipe: __import__("helpers").generate(p, "a cat", **SMALL),
                       "pipeline", "pipe"))
    cases.append(E(a, "pipe=released pipeline", lambda c: _released_generate(c), "released"))
    for label, value in (("None", None), ("int", 123), ("bytes", b"a cat"), ("list", ["a cat"]), ("empty", ""),
                         ("spaces", "   "), ("tab only", "\t"), ("lone surrogate", "a\ud800cat"), ("float nan", NAN)):
        cases.append(E(a, f"prompt={label}", lambda c, v=value: gen(c, prompt=v), "prompt"))
    for label, value in ODD_PROMPTS.items():
        cases.append(OK(a, f"odd prompt: {label}", lambda c, v=value: gen(c, prompt=v), is_image()))
    for label, value in (("int", 123), ("bytes", b"x"), ("list", ["x"]), ("lone surrogate", "\udfff")):
        cases.append(E(a, f"negative_prompt={label}", lambda c, v=value: gen(c, negative_prompt=v), "negative_prompt"))
    for label, value in (("None", None), ("empty", ""), ("3000 characters", "blurry " * 430), ("spaces", "  ")):
        cases.append(OK(a, f"negative_prompt={label}", lambda c, v=value: gen(c, negative_prompt=v), is_image()))
    bad_guidance = {"str '3.5'": "3.5", "True": True, "nan": NAN, "inf": INF, "-inf": -INF, "-1": -1, "31": 31,
                    "10**400": 10**400, "list": [3.5], "numpy nan": np.float32("nan"), "complex": 3j,
                    "torch tensor": torch.tensor(3.5), "None-like string 'None'": "None", "1e308": 1e308}
    for label, value in bad_guidance.items():
        cases.append(E(a, f"guidance_scale={label}", lambda c, v=value: gen(c, guidance_scale=v), "guidance_scale",
                       item="23" if label == "10**400" else ""))
    for label, value in (("0", 0), ("1", 1), ("int 7", 7), ("numpy float64 2.5", np.float64(2.5)), ("30", 30.0),
                         ("tiny 1e-9", 1e-9)):
        cases.append(OK(a, f"guidance_scale={label}", lambda c, v=value: gen(c, guidance_scale=v),
                        recipe_has(guidance_scale=float(value))))
    for label, value in (("0", 0), ("-1", -1), ("1.5", 1.5), ("'2'", "2"), ("True", True), ("1001", 1001),
                         ("10**400", 10**400), ("nan", NAN), ("2.0", 2.0)):
        cases.append(E(a, f"num_inference_steps={label}", lambda c, v=value: gen(c, num_inference_steps=v),
                       "num_inference_steps", "steps"))
    for label, value in (("1", 1), ("numpy int64 2", np.int64(2))):
        cases.append(OK(a, f"num_inference_steps={label}", lambda c, v=value: gen(c, num_inference_steps=v),
                        recipe_has(num_inference_steps=int(value))))
    for label, value in (("-1", -1), ("2**32", 2**32), ("2**63", 2**63), ("1.5", 1.5), ("'1'", "1"), ("True", True), ("nan", NAN),
                         ("10**400", 10**400), ("list", [1]), ("1.0", 1.0)):
        cases.append(E(a, f"seed={label}", lambda c, v=value: gen(c, seed=v), "seed"))
    for label, value in (("0", 0), ("2**32-1", 2**32 - 1), ("numpy int64 3", np.int64(3))):
        cases.append(OK(a, f"seed={label}", lambda c, v=value: gen(c, seed=v), recipe_has(seed=int(value))))
    cases.append(OK(a, "seed=None (random, recorded)", lambda c: gen(c, seed=None),
                    lambda r, c: True if isinstance(r.recipe["seed"], int) else f"seed {r.recipe['seed']!r}"))
    for side in ("height", "width"):
        for label, value in (("0", 0), ("-16", -16), ("17", 17), ("31.5", 31.5), ("'32'", "32"), ("True", True),
                             ("nan", NAN), ("10**400", 10**400), ("2**20", 2**20), ("32.0", 32.0), ("None-string", "None")):
            cases.append(E(a, f"{side}={label}", lambda c, s=side, v=value: gen(c, **{s: v}), side, timeout=60))
        for label, value in (("16", 16), ("48", 48), ("numpy int64 64", np.int64(64))):
            cases.append(OK(a, f"{side}={label}", lambda c, s=side, v=value: gen(c, **{s: v}),
                            recipe_has(**{side: int(value)})))
    for label, value in (("int", 123), ("str", "print"), ("no arguments", lambda: None),
                         ("one argument", lambda step: None), ("four required", lambda a, b, c, d: None)):
        cases.append(E(a, f"callback={label}", lambda c, v=value: gen(c, callback=v), "callback",
                       item="17" if "argument" in label or "required" in label else ""))
    cases.append(OK(a, "callback returning None", lambda c: gen(c, callback=lambda step, total, latents: None), is_image()))
    cases.append(OK(a, "callback with *args", lambda c: gen(c, callback=lambda *args: False), is_image()))
    cases.append(OK(a, "callback returning True cancels", lambda c: _cancelled(c), equals("cancelled")))
    cases.append(E(a, "unknown keyword steps=2", lambda c: gen(c, steps=2), "steps"))
    cases.append(E(a, "guidance passed positionally", lambda c: __import__("helpers").generate(c.pipe, "a cat", 3.5),
                   "positional", "argument"))
    return cases


def _released_generate(ctx):
    import helpers

    pipe = fresh_pipe()
    helpers.release_pipeline(pipe)
    ctx.start()
    return helpers.generate(pipe, "a cat", **SMALL)


# ---- prompt embeddings ----------------------------------------------------------------------------

def _embeddings(ctx, **changes):
    from helpers.generation.prompt_embeddings import PromptCache

    e = PromptCache(ctx.pipe).get("a cat")
    return dataclasses.replace(e, **{k: (v(e) if callable(v) else v) for k, v in changes.items()})


def embedding_cases():
    import torch

    from helpers import PromptCache

    a = "embeddings"
    cases = []
    for label, pipe in (("None", None), ("a name", "tiny"), ("an int", 3)):
        cases.append(E(a, f"PromptCache({label})", lambda c, p=pipe: PromptCache(p), "pipeline", "PromptCache"))
    for label, size in (("0", 0), ("-1", -1), ("1.5", 1.5), ("'16'", "16"), ("True", True), ("nan", NAN),
                        ("None", None)):
        cases.append(E(a, f"PromptCache(size={label})", lambda c, s=size: PromptCache(c.pipe, size=s), "size"))
    cases.append(OK(a, "PromptCache(size=10**12)", lambda c: PromptCache(c.pipe, size=10**12).get("a cat"),
                    lambda r, c: True))
    for label, value in (("None", None), ("123", 123), ("empty", ""), ("lone surrogate", "\ud800")):
        cases.append(E(a, f"PromptCache.get(prompt={label})", lambda c, v=value: PromptCache(c.pipe).get(v), "prompt"))
    cases.append(E(a, "PromptCache.get(negative_prompt=123)", lambda c: PromptCache(c.pipe).get("a", 123),
                   "negative_prompt"))

    def edited_hit(ctx):
        cache = PromptCache(ctx.pipe)
        first = cache.get("a cat")
        try:
            first.prompt_embeds.add_(1.0)
        except RuntimeError:  # read-only tensors: the edit is refused, which is right
            return "refused"
        second = cache.get("a cat")
        return "refused" if second.prompt_embeds is not first.prompt_embeds and not torch.equal(
            second.prompt_embeds, first.prompt_embeds) else "shared"

    cases.append(OK(a, "editing a cached tensor in place", edited_hit,
                    lambda r, c: True if r == "refused" else "the edit changed every later cache hit", item="7"))
    hand_built = {
        "wrong width": dict(prompt_embeds=lambda e: torch.zeros(1, e.prompt_embeds.shape[1], e.prompt_embeds.shape[2] + 8)),
        "batch of 2": dict(prompt_embeds=lambda e: e.prompt_embeds.repeat(2, 1, 1)),
        "mismatched sequence lengths": dict(negative_prompt_embeds=lambda e: e.negative_prompt_embeds[:, :5]),
        "float64": dict(prompt_embeds=lambda e: e.prompt_embeds.double()),
        "None tensor": dict(pooled_prompt_embeds=None),
        "a string": dict(prompt_embeds="a cat"),
        "a numpy array": dict(prompt_embeds=lambda e: e.prompt_embeds.numpy()),
        "NaN values": dict(prompt_embeds=lambda e: torch.full_like(e.prompt_embeds, NAN)),
        "inf values": dict(pooled_prompt_embeds=lambda e: torch.full_like(e.pooled_prompt_embeds, INF)),
        "2-D prompt_embeds": dict(prompt_embeds=lambda e: e.prompt_embeds[0]),
        "int tensor": dict(pooled_prompt_embeds=lambda e: e.pooled_prompt_embeds.long()),
    }
    for label, changes in hand_built.items():
        cases.append(E(a, f"hand-built embeddings: {label}",
                       lambda c, ch=changes: gen(c, prompt=None, embeddings=_embeddings(c, **ch)),
                       "embeds", "embeddings", "shape", "dtype", "batch", "NaN", "finite",
                       item="16" if "NaN" in label or "inf" in label else "18"))
    for label, value in (("int", 1), ("str", "a cat"), ("dict", {"prompt_embeds": None})):
        cases.append(E(a, f"embeddings={label}", lambda c, v=value: gen(c, prompt=None, embeddings=v), "embeddings"))
    cases.append(E(a, "embeddings with another prompt", lambda c: gen(c, prompt="a dog", embeddings=_embeddings(c)),
                   "prompt"))
    cases.append(E(a, "embeddings from other text encoders",
                   lambda c: gen(c, prompt=None, embeddings=_embeddings(c, source="other")), "text encoders"))
    cases.append(OK(a, "embeddings from the cache", lambda c: gen(c, prompt=None, embeddings=_embeddings(c)),
                    is_image()))
    return cases


# ---- loading ------------------------------------------------------------------------------------

def _folder(ctx, kind):
    """Local "model folders" a reader might point at."""
    import shutil

    from helpers.stand_in import tiny_pipeline_dir

    folder = ctx.tmp / "model"
    if kind == "empty":
        folder.mkdir()
    elif kind == "broken model_index.json":
        folder.mkdir()
        (folder / "model_index.json").write_text("{not json")
    elif kind == "config without weights":
        shutil.copytree(tiny_pipeline_dir(), folder, ignore=shutil.ignore_patterns("*.safetensors", "*.bin"))
    elif kind == "truncated safetensors":
        shutil.copytree(tiny_pipeline_dir(), folder)
        for weights in (folder / "transformer").glob("*.safetensors"):
            weights.write_bytes(weights.read_bytes()[:1000])
    elif kind == "a file":
        folder.write_text("not a folder")
    return str(folder)


def loading_cases():
    import numpy as np
    import torch

    import helpers
    from helpers.loading.planner import plan_loading, use_stand_in

    a = "loading"
    load, plan = helpers.load_pipeline, plan_loading
    cases = []
    for label, model in (("None", None), ("123", 123), ("empty", ""), ("misspelt 'sd35-larg'", "sd35-larg"),
                         ("upper case 'TINY'", "TINY"), ("'../..'", "../.."), ("10,000 characters", "x" * 10000),
                         ("a list", ["tiny"]), ("path with NUL", "a\x00b")):
        cases.append(E(a, f"load_pipeline({label})", lambda c, m=model: load(m, stand_in=False), "model", "preset", "folder",
                       item="10" if label == "None" else "19" if "." in label or "10,000" in label else ""))
    for kind in ("empty", "broken model_index.json", "config without weights", "truncated safetensors", "a file"):
        cases.append(E(a, f"load_pipeline(local folder: {kind}, stand_in=False)",
                       lambda c, k=kind: load(_folder(c, k), stand_in=False),
                       "not a saved pipeline", "model_index", "weights", "folder", item="19", timeout=60))
    for label, device in (("'cuda' on a CPU machine", "cuda"), ("'gpu'", "gpu"), ("'cuda:9'", "cuda:9"),
                          ("None", None), ("1", 1), ("'mps' on Linux", "mps"), ("'CPU'", "CPU")):
        cases.append(E(a, f"plan_loading(device={label})", lambda c, d=device: plan("tiny", device=d), "device",
                       check=(lambda r, c: True if r.device == "cpu" else "not cpu") if device == "CPU" else None))
    for label, offload in (("'yes'", "yes"), ("None", None), ("1", 1), ("'Model'", "Model"), ("'model' on CPU", "model")):
        cases.append(E(a, f"plan_loading(offload={label})", lambda c, o=offload: plan("tiny", offload=o), "offload"))
    bools = {"'no'": "no", "'false'": "false", "'yes'": "yes", "0": 0, "1": 1, "None": None, "numpy True": np.True_}
    reads = {"drop_t5": lambda p: p.t5 == "dropped", "quantize_t5": lambda p: p.t5 not in ("full", "dropped"),
             "stand_in": lambda p: p.stand_in}
    for option, reads_true in reads.items():
        for label, value in bools.items():
            if option == "stand_in" and value is None:
                continue  # None: automatic, documented
            meant = value in ("yes", 1, np.True_)
            model = "sd35-large" if option == "stand_in" else "tiny"
            cases.append(E(a, f"plan_loading({option}={label})",
                           lambda c, o=option, v=value, m=model: plan(m, **{o: v}),
                           option, check=lambda r, c, f=reads_true, m=meant, o=option, v=value: True if f(r) == m else
                           f"{o}={v!r} was read as {not m}", item="5"))
    for option in ("keep_previous", "fast"):
        for label, value in (("'no'", "no"), ("0", 0), ("None", None)):
            cases.append(E(a, f"load_pipeline({option}={label})", lambda c, o=option, v=value: load("tiny", **{o: v}),
                           option, item="5" if option == "keep_previous" else "", timeout=60))
    for label, dtype in (("'float16'", "float16"), ("'bf16'", "bf16"), ("torch.int8", torch.int8), ("float", float),
                         ("None", None), ("16", 16), ("numpy float16", np.float16)):
        cases.append(E(a, f"plan_loading(dtype={label})", lambda c, d=dtype: plan("tiny", dtype=d), "dtype"))
    for label, transformer in (("123", 123), ("empty", ""), ("'/nonexistent'", "/nonexistent/transformer"),
                               ("a file", "FILE"), ("an empty folder", "EMPTY")):
        def call(c, t=transformer):
            if t == "FILE":
                t = str(c.protect(c.tmp / "weights.txt"))
            elif t == "EMPTY":
                (c.tmp / "empty").mkdir()
                t = str(c.tmp / "empty")
            return plan("sd35-large-nf4", stand_in=True, transformer=t)
        cases.append(E(a, f"plan_loading(transformer={label})", call, "transformer"))
    cases.append(E(a, "plan_loading(drop_t5=True, quantize_t5=True)",
                   lambda c: plan("tiny", drop_t5=True, quantize_t5=True), "drop_t5"))
    cases.append(E(a, "plan_loading(unknown keyword)", lambda c: plan("tiny", offlaod="none"), "offlaod"))
    for which in ("free_bytes", "host_bytes"):
        for label, value in (("nan", NAN), ("inf", INF), ("-1", -1), ("'1e9'", "1e9"), ("10**400", 10**400),
                             ("True", True), ("1.5", 1.5)):
            def call(c, w=which, v=value):
                from helpers.loading.hardware_profiles import get_profile, on_profile

                with on_profile(get_profile("free Colab T4")):
                    return plan("sd35-large-nf4", stand_in=False, **{w: v})
            cases.append(E(a, f"plan_loading({which}={label}) on a T4", call, which, item="9",
                           check=lambda r, c: "reports that the plan fits" if r.fits else True))
    cases.append(OK(a, "plan_loading(free_bytes=0) on a T4", lambda c: _t4_plan(free_bytes=0),
                    lambda r, c: True if not r.fits else "0 free bytes fits?"))
    for label, model in (("None", None), ("123", 123), ("'sd35-larg'", "sd35-larg"), ("empty", ""), ("list", ["tiny"])):
        cases.append(E(a, f"model_id({label})", lambda c, m=model: helpers.model_id(m, stand_in=False),
                       "preset", "model", item="10"))
    cases.append(OK(a, "model_id('sd35-large', stand_in=False)", lambda c: helpers.model_id("sd35-large", stand_in=False),
                    equals("stabilityai/stable-diffusion-3.5-large")))
    for label, value in (("'no'", "no"), ("'false'", "false"), ("'0'", "0"), ("2", 2)):
        cases.append(E(a, f"use_stand_in({label})", lambda c, v=value: use_stand_in(v), "stand_in", "SD35_STAND_IN",
                       item="5", check=lambda r, c, v=value: True if r is (v not in ("no", "false", "0")) else
                       f"{v!r} read as {r}"))
    for label, env in (("off", "off"), ("maybe", "maybe"), ("2", "2"), ("' 0 '", " 0 ")):
        def call(c, e=env):
            os.environ["SD35_STAND_IN"] = e
            return use_stand_in(None)
        cases.append(E(a, f"SD35_STAND_IN={label}", call, "SD35_STAND_IN", item="5",
                       check=lambda r, c, e=env: True if (e.strip() in ("0", "off")) != r else f"{e!r} read as {r}"))
    for label, pipe in (("'tiny'", "tiny"), ("123", 123)):
        cases.append(E(a, f"release_pipeline({label})", lambda c, p=pipe: helpers.release_pipeline(p), "pipe",
                       "pipeline", item="23"))
    cases.append(OK(a, "release_pipeline(None)", lambda c: helpers.release_pipeline(None)))
    cases.append(OK(a, "release_pipeline twice", lambda c: [helpers.release_pipeline(p) for p in [fresh_pipe()] * 2]))
    for label, name in (("None", None), ("'nope'", "nope"), ("123", 123)):
        cases.append(E(a, f"get_preset({label})", lambda c, n=name: helpers.get_preset(n), "preset"))
    return cases


def _t4_plan(**options):
    from helpers.loading.hardware_profiles import get_profile, on_profile
    from helpers.loading.planner import plan_loading

    with on_profile(get_profile("free Colab T4")):
        return plan_loading("sd35-large-nf4", stand_in=False, **options)


# ---- Hub access and tokens ------------------------------------------------------------------------

def hub_cases():
    import helpers
    from helpers.loading import hub_access

    a = "hub"
    cases = []
    for label, repo in (("None", None), ("123", 123), ("empty", ""), ("'../..'", "../..")):
        cases.append(E(a, f"is_cached({label})", lambda c, r=repo: hub_access.is_cached(r), "repo",
                       check=(lambda r, c: r is False) if isinstance(repo, str) else None, item="23"))
    cases.append(OK(a, "find_token with HF_TOKEN set (returns it, prints nothing)", lambda c: hub_access.find_token() and None))
    for label, model in (("real id, stand_in=False", "stabilityai/stable-diffusion-3.5-large"),
                         ("misspelt id, stand_in=False", "stabilityai/stable-diffusion-3.5-larg"),
                         ("owner/name that does not exist", "nobody/nothing")):
        cases.append(E(a, f"load_pipeline({label}) with a token", lambda c, m=model: helpers.load_pipeline(m, stand_in=False),
                       "not in the local", "cache", "not found", "HF_HUB_OFFLINE", "does not exist",
                       item="20" if "misspelt" in label else ""))
    cases.append(E(a, "require_access offline with a token",
                   lambda c: hub_access.require_access("stabilityai/stable-diffusion-3.5-large", FAKE_TOKEN),
                   "access", "token", check=lambda r, c: True))

    def hub_error(ctx):
        error = OSError(f"401 Client Error for url https://huggingface.co/x (Authorization: Bearer {FAKE_TOKEN})")
        better = hub_access.explain_hub_error(error, "stabilityai/stable-diffusion-3.5-large")
        if better is not None:
            raise better
        return None
    cases.append(E(a, "a Hub error that echoes the token", hub_error, "access", "token", "gated", "log in",
                   check=lambda r, c: True))
    cases.append(E(a, "load_pipeline(transformer='owner/name', stand_in=False) with a token",
                   lambda c: helpers.load_pipeline("sd35-large-nf4", stand_in=False, transformer="nobody/nothing"),
                   "cache", "HF_HUB_OFFLINE", "GPU", "transformer", "memory"))
    return cases


# ---- measuring ----------------------------------------------------------------------------------

def measuring_cases():
    import numpy as np
    import torch

    import helpers
    from helpers.loading.memory_model import loaded_bytes, meta_census, working_bytes

    a = "measuring"
    cases = []
    for label, value in (("nan", NAN), ("inf", INF), ("'x'", "x"), ("True", True), ("10**400", 10**400),
                         ("list", [1]), ("complex", 1j)):
        cases.append(E(a, f"format_bytes({label})", lambda c, v=value: helpers.format_bytes(v), "bytes", "number",
                       item="11" if label == "nan" else "23"))
    cases.append(E(a, "format_bytes(-1)", lambda c: helpers.format_bytes(-1), "bytes", "negative",
                   check=lambda r, c: True if r.startswith("-") else f"{r!r}"))
    for label, value, text in (("None", None, "n/a"), ("0", 0, "0.0 MiB"), ("1 GiB", 1024**3, "1.00 GiB"),
                               ("numpy int64", np.int64(2048 * 1024), "2.0 MiB"), ("float", 1.5 * 1024**2, "1.5 MiB")):
        cases.append(OK(a, f"format_bytes({label})", lambda c, v=value: helpers.format_bytes(v), equals(text)))
    for label, pipe in (("None", None), ("'tiny'", "tiny"), ("123", 123), ("a dict", {})):
        cases.append(E(a, f"component_footprints({label})", lambda c, p=pipe: helpers.component_footprints(p),
                       "pipe", "pipeline", item="23"))
    cases.append(OK(a, "component_footprints(pipe)", lambda c: helpers.component_footprints(c.pipe),
                    lambda r, c: True if r and all(isinstance(v, int) and v > 0 for v in r.values()) else f"{r}"))
    for cls in ("PeakMemory", "Stopwatch"):
        for label, device in (("'cuda' without a GPU", "cuda"), ("'gpu'", "gpu"), ("None", None), ("123", 123),
                              ("'mps' on Linux", "mps"), ("'cuda:7'", "cuda:7")):
            def call(c, k=cls, d=device):
                with getattr(helpers, k)(d):
                    sum(range(1000))
            cases.append(E(a, f"{cls}({label})", call, "device", "cuda", "GPU", item="23"))
        cases.append(OK(a, f"{cls}('cpu') around work", lambda c, k=cls: _measure(getattr(helpers, k)),
                        lambda r, c: True if r >= 0 else f"{r}"))
    for label, interval in (("0", 0), ("-1", -1), ("nan", NAN), ("'x'", "x")):
        cases.append(E(a, f"PeakMemory(interval={label})", lambda c, i=interval: _measure(lambda: helpers.PeakMemory("cpu", i)),
                       "interval"))
    cases.append(E(a, "loaded_bytes(None, bfloat16)", lambda c: loaded_bytes(None, torch.bfloat16), "counts", "census",
                   item="23"))
    cases.append(E(a, "loaded_bytes(census, 'bf16')", lambda c: loaded_bytes(meta_census("large")["transformer"], "bf16"),
                   "dtype"))
    cases.append(E(a, "loaded_bytes(census, quantization='nf5')",
                   lambda c: loaded_bytes(meta_census("large")["transformer"], torch.bfloat16, "nf5"), "quantization"))
    for label, args in (("'nope'", ("nope",)), ("size -1024", ("large", -1024)), ("size 0", ("large", 0)),
                        ("size 1.5", ("large", 1.5)), ("size '1024'", ("large", "1024")), ("size nan", ("large", NAN)),
                        ("dtype 'bf16'", ("large", 1024, "bf16")), ("kernel 'nope'", ("large", 1024, torch.bfloat16, "nope")),
                        ("None", (None,))):
        cases.append(E(a, f"working_bytes({label})", lambda c, x=args: working_bytes(*x), "size", "transformer_config",
                       "dtype", "kernel", "family", item="11" if "-1024" in label else "23"))
    return cases


def _measure(make):
    with make() as meter:
        bytearray(10**6)
    return getattr(meter, "seconds", None) if hasattr(meter, "seconds") else meter.peak_bytes


# ---- stats ----------------------------------------------------------------------------------------

def stats_cases():
    import numpy as np

    from helpers.studies import stats

    a = "stats"
    cases = []
    values = {"'abc'": "abc", "[]": [], "None": None, "[nan]": [NAN], "[1, inf]": [1, INF], "[1, 'a']": [1, "a"],
              "ragged": [[1, 2], [3]], "a dict": {"a": 1}, "a generator": (x for x in [1.0, 2.0])}
    for label, v in values.items():
        ok_generator = label == "a generator"
        cases.append(E(a, f"bootstrap_mean_ci({label})", lambda c, x=v: stats.bootstrap_mean_ci(x), "values",
                       check=(lambda r, c: True if abs(r[0] - 1.5) < 1e-9 else f"{r}") if ok_generator else None,
                       item="23" if label == "'abc'" else ""))
    for label, r in (("0", 0), ("-1", -1), ("1.5", 1.5), ("'x'", "x"), ("None", None), ("10**12", 10**12)):
        cases.append(E(a, f"bootstrap_mean_ci(resamples={label})", lambda c, x=r: stats.bootstrap_mean_ci([1.0, 2.0], resamples=x),
                       "resamples", item="23" if label == "0" else "", timeout=30))
    for label, conf in (("0", 0), ("1", 1), ("nan", NAN), ("'0.95'", "0.95"), ("95", 95), ("None", None)):
        cases.append(E(a, f"bootstrap_mean_ci(confidence={label})", lambda c, x=conf: stats.bootstrap_mean_ci([1.0, 2.0], x),
                       "confidence"))
    for label, seed in (("-1", -1), ("'x'", "x"), ("1.5", 1.5)):
        cases.append(E(a, f"bootstrap_mean_ci(seed={label})", lambda c, x=seed: stats.bootstrap_mean_ci([1.0, 2.0], seed=x),
                       "seed"))
    for label, good, expected in (("one value", [2.0], (2.0, 2.0, 2.0)), ("numpy array", np.array([2.0, 2.0]), (2.0, 2.0, 2.0))):
        cases.append(OK(a, f"bootstrap_mean_ci({label})", lambda c, x=good: stats.bootstrap_mean_ci(x), equals(expected)))
    for label, v in (("'abc'", "abc"), ("[]", []), ("[nan]", [NAN]), ("None", None)):
        cases.append(E(a, f"sign_flip_p_value({label})", lambda c, x=v: stats.sign_flip_p_value(x), "differences"))
    for label, r in (("0", 0), ("-5", -5), ("'x'", "x")):
        cases.append(E(a, f"sign_flip_p_value(30 values, resamples={label})",
                       lambda c, x=r: stats.sign_flip_p_value(np.linspace(-1, 2, 30), resamples=x), "resamples"))
    cases.append(OK(a, "sign_flip_p_value(all zero)", lambda c: stats.sign_flip_p_value([0.0, 0.0, 0.0]), equals(1.0)))
    for label, pair in (("lengths 2 and 3", ([1, 2], [1, 2, 3])), ("empty", ([], [])), ("strings", ("ab", "cd")),
                        ("nan", ([NAN], [1.0])), ("None", (None, None))):
        cases.append(E(a, f"paired_comparison({label})", lambda c, p=pair: stats.paired_comparison(*p), "a", "b",
                       "values", "paired"))
    for label, n in (("-1", -1), ("0", 0), ("1.5", 1.5), ("'x'", "x"), ("None", None), ("nan", NAN), ("True", True)):
        cases.append(E(a, f"smallest_possible_p_value({label})", lambda c, x=n: stats.smallest_possible_p_value(x), "n",
                       "pairs", item="11" if label == "-1" else ""))
    cases.append(OK(a, "smallest_possible_p_value(10**4)", lambda c: stats.smallest_possible_p_value(10**4),
                    lambda r, c: True if 0 <= r < 1e-300 else f"{r}"))
    for label, p in (("'x'", "x"), ("None", None), ("-0.1", -0.1), ("1.5", 1.5), ("inf", INF), ("list", [0.1])):
        cases.append(E(a, f"format_p({label})", lambda c, x=p: stats.format_p(x), "p", item="23" if label == "'x'" else ""))
    cases.append(OK(a, "format_p(nan)", lambda c: stats.format_p(NAN), equals("p = n/a")))
    for label, args in (("mismatched", ([1, 2, 3], [[1, 2]])), ("empty", ([], [])), ("strings", (["a", "b"], [["x", "y"]])),
                        ("no value above 1", ([0.5, 1.0], [[1, 2]])), ("nan score", ([2, 3], [[NAN, 1.0]]))):
        cases.append(E(a, f"suggest_guidance({label})", lambda c, x=args: stats.suggest_guidance(*x), "guidance",
                       "scores", "values"))
    return cases


# ---- grids ----------------------------------------------------------------------------------------

def _tiles(n=2, size=(32, 32)):
    from PIL import Image

    return [Image.new("RGB", size, (i * 40, 0, 0)) for i in range(n)]


def grid_cases():
    import numpy as np

    import helpers
    from helpers.studies.grids import xy_grid

    a = "grids"
    grid = helpers.image_grid
    cases = []
    for label, images in (("[None, None]", [None, None]), ("file names", ["a.png", "b.png"]),
                          ("numpy arrays", [np.zeros((32, 32, 3), np.uint8)] * 2), ("[]", []), ("None", None),
                          ("ints", [1, 2]), ("one image, not a list", "IMAGE")):
        def call(c, im=images):
            im = _tiles(1)[0] if im == "IMAGE" else im
            return grid(im, 1, 2)
        cases.append(E(a, f"image_grid(images={label})", call, "images", "image", item="23"))
    cases.append(OK(a, "image_grid(images=a generator)", lambda c: grid((t for t in _tiles(2)), 1, 2),
                    lambda r, c: True if r.size == (64, 32) else f"{r.size}"))
    cases.append(E(a, "image_grid(mixed sizes)", lambda c: grid(_tiles(1) + _tiles(1, (48, 48)), 1, 2), "size"))
    for which in ("rows", "cols"):
        for label, value in (("'2'", "2"), ("1.5", 1.5), ("0", 0), ("-1", -1), ("None", None), ("10**9", 10**9), ("2.0", 2.0)):
            def call(c, w=which, v=value):
                args = {"rows": 1, "cols": 2, w: v}
                return grid(_tiles(2), args["rows"], args["cols"])
            cases.append(E(a, f"image_grid({which}={label})", call, which, item="23"))
    for label, labels in (("wrong length", ["a"]), ("123", 123), ("a string 'ab'", "ab"), ("[None, None]", [None, None]),
                          ("a generator", (x for x in "ab"))):
        cases.append(E(a, f"image_grid(col_labels={label})", lambda c, x=labels: grid(_tiles(2), 1, 2, col_labels=x),
                       "col_labels", check=(lambda r, c: True) if label == "[None, None]" else None))
    for label, title in (("123", 123), ("bytes", b"x"), ("a list", ["a"]), ("True", True)):
        cases.append(E(a, f"image_grid(title={label})", lambda c, t=title: grid(_tiles(2), 1, 2, title=t), "title",
                       item="14"))
    for label, title in (("20,000 characters", "x" * 20000), ("empty", ""), ("emoji", "🐱 grid"), ("newlines", "a\nb")):
        cases.append(OK(a, f"image_grid(title={label})", lambda c, t=title: grid(_tiles(2), 1, 2, title=t),
                        lambda r, c: True if r.size[0] == 64 else f"{r.size}"))
    for label, value in (("row_title=123", dict(row_title=123)), ("col_title=[1]", dict(col_title=[1]))):
        cases.append(E(a, f"image_grid({label})", lambda c, v=value: grid(_tiles(2), 1, 2, **v), "title"))
    base = dict(prompt="a cat", **SMALL)
    xy = {
        "unknown axis": dict(x=("bogus", [1]), y=("seed", [0])),
        "x not a pair": dict(x="seed", y=("seed", [0])),
        "x a 3-tuple": dict(x=("seed", [0], 1), y=("guidance_scale", [1.0])),
        "empty axis": dict(x=("seed", []), y=("guidance_scale", [1.0])),
        "axis values None": dict(x=("seed", None), y=("guidance_scale", [1.0])),
        "axis values an int": dict(x=("seed", 5), y=("guidance_scale", [1.0])),
        "same axis twice": dict(x=("seed", [0]), y=("seed", [1])),
        "bad value on an axis": dict(x=("guidance_scale", [1.0, NAN]), y=("seed", [0])),
        "axis name an int": dict(x=(1, [0]), y=("seed", [0])),
        "base a string": dict(x=("seed", [0]), y=("guidance_scale", [1.0]), base="a cat"),
        "base with steps=": dict(x=("seed", [0]), y=("guidance_scale", [1.0]), base={**base, "steps": 2}),
        "no prompt": dict(x=("seed", [0]), y=("guidance_scale", [1.0]), base=dict(SMALL)),
        "embeddings_cache a dict": dict(x=("seed", [0]), y=("guidance_scale", [1.0]), embeddings_cache={"a cat": 1}),
    }
    for label, kwargs in xy.items():
        def call(c, k=kwargs):
            k = dict(k)
            k.setdefault("base", base)
            return xy_grid(c.pipe, **k)
        cases.append(E(a, f"xy_grid({label})", call, "axis", "x", "y", "base", "prompt", "embeddings_cache",
                       "guidance_scale", "argument", item="23"))
    cases.append(E(a, "xy_grid(a 1,000,000-cell axis)",
                   lambda c: xy_grid(c.pipe, x=("seed", range(10**6)), y=("guidance_scale", [1.0]), base=base),
                   "cells", "axis", "too many", item="13", timeout=20))
    for side in ("height", "width"):
        cases.append(E(a, f"xy_grid(a {side} axis)",
                       lambda c, s=side: xy_grid(c.pipe, x=(s, [32, 48]), y=("seed", [0]), base=base),
                       side, "size", check=lambda r, c: True, item="12"))
    cases.append(E(a, "xy_grid(title=123)",
                   lambda c: xy_grid(c.pipe, x=("seed", [0]), y=("guidance_scale", [1.0]), base=base, title=123),
                   "title", item="14"))
    cases.append(OK(a, "xy_grid 2x1 (axis from a generator)",
                    lambda c: xy_grid(c.pipe, x=("seed", (s for s in [0, 1])), y=("guidance_scale", [1.0]), base=base),
                    lambda r, c: True if len(r[1][0]) == 2 else f"{r[1]}"))
    cases.append(OK(a, "xy_grid with a None negative prompt on an axis",
                    lambda c: xy_grid(c.pipe, x=("negative_prompt", [None, "blurry"]), y=("seed", [0]), base=base),
                    lambda r, c: True))
    return cases


# ---- PNG recipes --------------------------------------------------------------------------------------

def _recipe(ctx, **changes):
    recipe = dict(ctx.result.recipe)
    for key, value in changes.items():
        if value is _DROP:
            recipe.pop(key, None)
        else:
            recipe[key] = value
    return recipe


_DROP = object()


def _save(ctx, image=None, recipe=None, folder="out", stem=None):
    from helpers.generation.png_metadata import save_png_with_recipe

    image = ctx.result.image if image is None else image
    recipe = ctx.result.recipe if recipe is None else recipe
    folder = ctx.tmp / folder if isinstance(folder, str) else folder
    return save_png_with_recipe(image, recipe, folder, stem) if stem is not None else save_png_with_recipe(image, recipe, folder)


def _inside(ctx):
    def check(path, c):
        path = Path(path).resolve()
        return True if path.is_relative_to((c.tmp / "out").resolve()) else f"wrote outside the folder: {path}"
    return check


def png_cases():
    from PIL import Image

    from helpers.generation.png_metadata import parse_a1111_parameters, read_png_recipe
    from helpers.generation.text_to_image import recipe_arguments

    a = "png"
    cases = []
    for label, image in (("None", None), ("a str", "image.png"), ("numpy array", "ARRAY"), ("mode F", "F"),
                         ("0x0", "EMPTY"), ("mode I;16", "I16"), ("CMYK", "CMYK")):
        def call(c, im=image):
            import numpy as np
            made = {"ARRAY": np.zeros((32, 32, 3), np.uint8), "F": Image.new("F", (32, 32), 0.5),
                    "EMPTY": Image.new("RGB", (0, 0)), "I16": Image.new("I;16", (32, 32)),
                    "CMYK": Image.new("CMYK", (32, 32))}.get(im, im)
            if im is None:
                from helpers.generation.png_metadata import save_png_with_recipe
                return save_png_with_recipe(None, c.result.recipe, c.tmp / "out")
            return _save(c, image=made)
        valid = image in ("I16", "CMYK")
        cases.append(E(a, f"save_png_with_recipe(image={label})", call, "image", "mode", "size",
                       check=(lambda r, c: True) if valid else None, item="21" if image in ("F", "EMPTY") else "",
                       after=no_files_left("out") if not valid else None))
    for label, recipe in (("None", None), ("a list", ["a"]), ("{}", {}), ("a str", "a cat")):
        def call(c, r=recipe):
            from helpers.generation.png_metadata import save_png_with_recipe
            return save_png_with_recipe(c.result.image, r, c.tmp / "out")
        cases.append(E(a, f"save_png_with_recipe(recipe={label})", call, "recipe", "prompt"))
    for label, changes, names in (("missing seed", dict(seed=_DROP), ("seed",)),
                                  ("missing num_inference_steps", dict(num_inference_steps=_DROP), ("num_inference_steps", "steps")),
                                  ("seed '../x'", dict(seed="../x"), ("seed",)),
                                  ("seed '/tmp/probe-abs-escape'", dict(seed="/tmp/probe-abs-escape"), ("seed",)),
                                  ("guidance nan", dict(guidance_scale=NAN), ("guidance",)),
                                  ("a torch dtype inside", dict(dtype=__import__("torch").float16), ("recipe", "dtype", "JSON")),
                                  ("prompt None", dict(prompt=None), ("prompt",))):
        def check(path, c):
            raw = Image.open(path).text["sd35_recipe"]
            if "NaN" in raw:
                return "the recipe was written as non-standard JSON (NaN)"
            return True if Path(path).resolve().is_relative_to((c.tmp / "out").resolve()) else f"wrote outside: {path}"
        cases.append(E(a, f"save_png_with_recipe(recipe {label})", lambda c, ch=changes: _save(c, recipe=_recipe(c, **ch)),
                       *names, check=check if "missing" not in label else None,
                       item="4" if "seed '" in label else "11" if "nan" in label else "21", after=nothing_outside))
    for label, folder in (("None", None), ("123", 123), ("a file", "FILE"), ("a read-only folder", "RO"),
                          ("a path through a file", "FILE/sub")):
        def call(c, f=folder):
            if f is None or f == 123:
                return _save(c, folder=f)
            if f.startswith("FILE"):
                c.protect(c.tmp / "FILE")
                return _save(c, folder=c.tmp / f)
            return _save(c, folder=c.readonly(c.tmp / "ro"))
        cases.append(E(a, f"save_png_with_recipe(folder={label})", call, "folder", "read-only", "not a folder",
                       "permission", "writ", item="22"))
    cases.append(OK(a, "save_png_with_recipe(new nested folder)", lambda c: _save(c, folder=c.tmp / "a" / "b" / "c"),
                    lambda r, c: True if Path(r).is_file() else "no file"))
    for label, stem in (("'../escape'", "../escape"), ("absolute", "/tmp/probe-abs-escape"), ("'a/b'", "a/b"),
                        ("empty", ""), ("10,000 characters", "x" * 10000), ("NUL", "a\x00b"), ("'.'", "."),
                        ("'..'", ".."), ("123", 123), ("'~/x'", "~/x")):
        valid = label in ("empty",)
        cases.append(E(a, f"save_png_with_recipe(stem={label})", lambda c, s=stem: _save(c, stem=s), "stem", "name",
                       check=_inside(None), after=nothing_outside, item="4" if "escape" in str(stem) else ""))
    for label, stem in (("emoji", "🐱"), ("spaces", "my image"), ("a taken name", "taken")):
        def call(c, s=stem):
            c.protect(c.tmp / "out" / "taken.png", b"the user's png")
            return _save(c, stem=s)
        cases.append(OK(a, f"save_png_with_recipe(stem={label})", call, _inside(None)))

    def full(c, budget):
        with full_disk(r"\.png$", budget):
            return _save(c)
    for budget in (0, 100, 1000):
        cases.append(DISK(a, f"save_png_with_recipe on a full disk ({budget} bytes left)",
                          lambda c, b=budget: full(c, b), no_files_left("out")))
    for label, path in (("None", None), ("123", 123), ("missing file", "missing.png"), ("a folder", "."),
                        ("a text file", "TEXT"), ("a truncated PNG", "TRUNC"), ("an empty file", "EMPTY")):
        def call(c, p=path):
            if p == "TEXT":
                p = c.protect(c.tmp / "notes.txt", b"hello")
            elif p == "TRUNC":
                p = c.tmp / "t.png"
                p.write_bytes(Path(_save(c)).read_bytes()[:200])
            elif p == "EMPTY":
                p = c.tmp / "e.png"
                p.write_bytes(b"")
            return read_png_recipe(p)
        cases.append(E(a, f"read_png_recipe({label})", call, "path", "PNG", "image", "not found", "No such file",
                       item="21"))
    for label, text in (("a JSON list", "[1, 2]"), ("malformed JSON", "{seed: 1"), ("a JSON string", '"a cat"'),
                        ("NaN in JSON", '{"prompt": "a", "guidance_scale": NaN}')):
        def call(c, t=text):
            from PIL.PngImagePlugin import PngInfo
            info = PngInfo()
            info.add_text("sd35_recipe", t)
            path = c.tmp / "r.png"
            Image.new("RGB", (8, 8)).save(path, pnginfo=info)
            return read_png_recipe(path)
        cases.append(E(a, f"read_png_recipe(recipe is {label})", call, "recipe", item="11" if "list" in label else "21"))
    cases.append(OK(a, "read_png_recipe(a PNG without text)",
                    lambda c: (Image.new("RGB", (8, 8)).save(c.tmp / "p.png"), read_png_recipe(c.tmp / "p.png"))[1],
                    equals((None, None))))
    cases.append(OK(a, "read_png_recipe(a JPEG)",
                    lambda c: (Image.new("RGB", (8, 8)).save(c.tmp / "p.jpg"), read_png_recipe(c.tmp / "p.jpg"))[1],
                    equals((None, None))))
    for label, text in (("None", None), ("123", 123), ("bytes", b"a cat")):
        cases.append(E(a, f"parse_a1111_parameters({label})", lambda c, t=text: parse_a1111_parameters(t), "text",
                       "parameters"))
    for label, text, prompt in (("'a cat' (no settings line)", "a cat", "a cat"), ("empty", "", ""),
                                ("settings only", "Steps: 2, Seed: 1", ""),
                                ("prompt and negative, no settings", "a cat\nNegative prompt: dog", "a cat")):
        cases.append(E(a, f"parse_a1111_parameters({label})", lambda c, t=text: parse_a1111_parameters(t), "parameters",
                       check=lambda r, c, p=prompt: True if r.get("prompt") == p else f"prompt read as {r.get('prompt')!r}",
                       item="11"))
    for label, recipe in (("None", None), ("{}", {}), ("a list", []), ("missing seed", "NOSEED"), ("a str", "x")):
        def call(c, r=recipe):
            return recipe_arguments(_recipe(c, seed=_DROP) if r == "NOSEED" else r)
        cases.append(E(a, f"recipe_arguments({label})", call, "recipe", "seed", item="23"))
    for label, prompt in ODD_PROMPTS.items():
        for which in ("prompt", "negative_prompt"):
            def call(c, p=prompt, w=which):
                path = _save(c, recipe=_recipe(c, **{w: p}))
                text, recipe = read_png_recipe(path)
                parsed = parse_a1111_parameters(text)
                return (recipe[w], parsed[w])
            expected = (prompt, prompt)
            cases.append(OK(a, f"round trip of {which}: {label}", call, equals(expected)))
    return cases


# ---- studies ------------------------------------------------------------------------------------

def _jobs(n_seeds=2, conditions=1):
    from helpers.studies.jobs import Condition, plan_jobs

    conds = [Condition("plain", "a cat"), Condition("negative", "a cat", "a dog")][:conditions]
    return plan_jobs(conds, ["tiny"], list(range(n_seeds)), guidance_scale=2.0, **SMALL)


def _study(ctx, jobs=None, root="study", **kwargs):
    from helpers.studies.jobs import DEFAULT_LABELS, run_study

    kwargs.setdefault("labels", DEFAULT_LABELS)
    root = ctx.tmp / root if isinstance(root, str) else root
    return run_study(_jobs() if jobs is None else jobs, root, stand_in=True, **kwargs)


def _job(**changes):
    job = dict(_jobs(1)[0])
    job.update(changes)
    return [job]


def _complete(result, ctx, n=2):
    """A finished study: n ok rows, each PNG there, results.csv readable with n rows."""
    from helpers.studies.results import read_results

    rows = read_results(result.csv_path)
    if len(rows) != n or any(r["status"] != "ok" for r in rows):
        return f"results.csv has {len(rows)} rows, statuses {[r['status'] for r in rows]}"
    missing = [r["image"] for r in rows if not (result.run_dir / r["image"]).is_file()]
    if missing:
        return f"rows point at missing PNGs: {missing}"
    torn = [r["job_id"] for r in rows if not r["clip_model"] or not _valid_json_text(r["versions"])]
    return f"rows {torn} are torn (clip_model or versions lost) yet kept as finished" if torn else True


def _valid_json_text(text):
    try:
        json.loads(text)
        return True
    except (TypeError, ValueError):
        return False


def _interrupted(ctx, at=2):
    """A study stopped by KeyboardInterrupt at its `at`-th transformer call; returns its run folder."""
    try:
        with Interrupt(at):
            _study(ctx)
    except KeyboardInterrupt:
        pass
    runs = sorted((ctx.tmp / "study").glob("run-*"))
    if not runs:
        raise RuntimeError("the interrupted study left no run folder")
    return runs[-1]


def study_cases():
    import numpy as np

    from helpers.output_folders import fresh_run_dir
    from helpers.studies.jobs import Condition, check_jobs, image_name, plan_jobs
    from helpers.studies.results import read_results

    a = "studies"
    cases = []
    for label, jobs in (("None", None), ("[]", []), ("[None]", [None]), ("a str", "jobs"), ("a dict", {"job_id": 0})):
        cases.append(E(a, f"check_jobs({label})", lambda c, j=jobs: check_jobs(j), "jobs", "job", item="23"))
    job_fields = {
        "job_id '../../evil'": dict(job_id="../../evil"), "job_id 1.5": dict(job_id=1.5), "job_id None": dict(job_id=None),
        "job_id -1": dict(job_id=-1), "job_id True": dict(job_id=True), "condition None": dict(condition=None),
        "condition 123": dict(condition=123), "condition ''": dict(condition=""),
        "seed '1'": dict(seed="1"), "seed -1": dict(seed=-1), "model 123": dict(model=123), "model 'bogus'": dict(model="bogus"),
        "prompt None": dict(prompt=None), "steps '2'": dict(num_inference_steps="2"), "height 17": dict(height=17),
        "guidance nan": dict(guidance_scale=NAN),
    }
    for label, changes in job_fields.items():
        cases.append(E(a, f"check_jobs(job {label})", lambda c, ch=changes: check_jobs(_job(**ch)),
                       *changes.keys(), "job", item="15" if any(k in label for k in ("job_id", "condition")) else ""))
    # A condition is only ever used slugged (image_name): '../x' names the file ..._x_..., inside the run folder.
    cases.append(OK(a, "check_jobs(job condition '../x')", lambda c: image_name(check_jobs(_job(condition="../x"))[0]),
                    lambda r, c: True if "/" not in r and ".." not in r else f"image name {r!r}", item="15"))
    cases.append(E(a, "check_jobs(job seed numpy int64)", lambda c: check_jobs(_job(seed=np.int64(1))), "seed",
                   check=lambda r, c: True if type(r[0]["seed"]) is int else
                   "the job keeps its numpy int64 seed, which jobs.json cannot hold", item="15"))
    cases.append(E(a, "check_jobs(job without 'seed')", lambda c: check_jobs([{k: v for k, v in _job()[0].items() if k != "seed"}]),
                   "seed"))
    cases.append(E(a, "check_jobs(duplicate job ids)", lambda c: check_jobs(_job() + _job(seed=5)), "job_id", "unique"))
    for label, kwargs in (("conditions []", dict(conditions=[])), ("conditions a str", dict(conditions="abc")),
                          ("models ['bogus']", dict(models=["bogus"])), ("seeds [1.5]", dict(seeds=[1.5])),
                          ("seeds [None]", dict(seeds=[None])), ("guidance '2'", dict(guidance_scale="2")),
                          ("seeds 3 (an int)", dict(seeds=3)), ("models 'tiny' (a str)", dict(models="tiny"))):
        def call(c, k=kwargs):
            args = dict(conditions=[Condition("plain", "a cat")], models=["tiny"], seeds=[0], guidance_scale=2.0, **SMALL)
            args.update(k)
            return plan_jobs(args.pop("conditions"), args.pop("models"), args.pop("seeds"), **args)
        cases.append(E(a, f"plan_jobs({label})", call, *kwargs.keys(), "condition", "model", "seed"))
    for label, labels in (("'ab'", "ab"), ("['', '']", ["", ""]), ("[]", []), ("['a']", ["a"]), ("None", None),
                          ("123", 123), ("['a', 'a']", ["a", "a"]), ("[1, 2]", [1, 2])):
        cases.append(E(a, f"run_study(labels={label})", lambda c, x=labels: _study(c, labels=x), "labels", item="8",
                       timeout=60))
    for label, root in (("a file", "FILE"), ("None", None), ("123", 123), ("a read-only folder", "RO")):
        def call(c, r=root):
            if r == "FILE":
                r = c.protect(c.tmp / "study.txt")
            elif r == "RO":
                r = c.readonly(c.tmp / "ro")
            return _study(c, root=r)
        cases.append(E(a, f"run_study(root={label})", call, "root", "folder", "read-only", "permission", item="22",
                       timeout=60))
    for label, jobs in (("job_id '../../evil'", "EVIL"), ("condition None", "COND")):
        def call(c, j=jobs):
            return _study(c, jobs=_job(job_id="../../evil") if j == "EVIL" else _job(condition=None))
        cases.append(E(a, f"run_study(a job with {label})", call, "job_id", "condition", item="15", timeout=60))
    cases.append(OK(a, "run_study(2 jobs)", lambda c: _study(c), _complete, timeout=90))
    for label, resume in (("a missing folder", "MISSING"), ("a folder without jobs.json", "EMPTY"), ("123", 123)):
        def call(c, r=resume):
            if r == "EMPTY":
                (c.tmp / "empty").mkdir()
                r = c.tmp / "empty"
            elif r == "MISSING":
                r = c.tmp / "missing"
            return _study(c, resume=r)
        cases.append(E(a, f"run_study(resume={label})", call, "resume", timeout=60))
    cases.append(E(a, "run_study(resume= a finished study)", lambda c: _study(c, resume=_started(c, _study(c).run_dir)),
                   "finished", "resume", timeout=90))
    cases.append(E(a, "run_study(resume= with other jobs)",
                   lambda c: _study(c, jobs=_jobs(3), resume=_started(c, _interrupted(c))), "jobs", "resume", timeout=90))

    def resumed(c):
        run_dir = _started(c, _interrupted(c))
        return _study(c, resume=run_dir)
    cases.append(OK(a, "run_study interrupted, then resumed", resumed, _complete, timeout=90))

    def png_gone(c):
        run_dir = _interrupted(c)
        for png in run_dir.glob("*.png"):
            png.unlink()
        c.start()
        return _study(c, resume=run_dir)
    cases.append(OK(a, "resume after the finished rows' PNGs were deleted", png_gone, _complete, item="25", timeout=90))

    def torn_row(c):
        run_dir = _interrupted(c)
        rows = next(run_dir.glob("finished-rows-process-*.csv"))
        data = rows.read_bytes()
        last = data.rstrip(b"\n").rfind(b"\n") + 1
        rows.write_bytes(data[: last + 30])  # the last row cut short, as a full disk leaves it
        c.start()
        return _study(c, resume=run_dir)
    cases.append(OK(a, "resume after a torn last row", torn_row, _complete, item="2", timeout=90))

    def results_disk_full(c):
        try:
            with full_disk(r"^results\.csv$", 300):
                _study(c)
        except OSError:
            pass
        run_dir = _started(c, sorted((c.tmp / "study").glob("run-*"))[-1])
        return _study(c, resume=run_dir)  # the disk has room again: finish it
    cases.append(OK(a, "a full disk while results.csv is written, then resume", results_disk_full, _complete,
                    item="1", timeout=120, after=_no_partial_results))

    def row_disk_full(c):
        try:
            with full_disk(r"^finished-rows", fail_at_write=2):  # row 1 (one write with its header), then row 2 tears
                _study(c)
        except OSError:
            pass
        run_dir = _started(c, sorted((c.tmp / "study").glob("run-*"))[-1])
        return _study(c, resume=run_dir)
    cases.append(OK(a, "a full disk while a row is appended, then resume", row_disk_full, _complete, item="2",
                    timeout=120))

    def png_disk_full(c):
        try:
            with full_disk(r"\.png$", 0):
                _study(c)
        except OSError:
            pass
        run_dir = sorted((c.tmp / "study").glob("run-*"))[-1]
        partial = [p.name for p in run_dir.glob("*.png")]
        if partial:
            return f"partial PNGs left: {partial}"
        c.start()
        return _study(c, resume=run_dir)
    cases.append(OK(a, "a full disk while a PNG is written, then resume", png_disk_full, _complete, timeout=120))

    def jobs_json_disk_full(c):
        with full_disk(r"^jobs\.json$", 50):
            _study(c)
    cases.append(DISK(a, "a full disk while jobs.json is written", jobs_json_disk_full,
                      lambda c: "left a run folder with a partial jobs.json" if any(
                          p.stat().st_size and not _valid_json(p) for p in (c.tmp / "study").glob("run-*/jobs.json")) else None,
                      timeout=60))
    for label, content in (("missing file", None), ("empty file", ""), ("garbage", "\x00\x01 not a csv"),
                           ("a column missing", "MISSING"), ("'nan' job ids", "NANID")):
        def call(c, t=content):
            path = c.tmp / "results.csv"
            if t == "MISSING":
                t = "job_id,model\n0,tiny\n"
            elif t == "NANID":
                t = "job_id,seed\nabc,1\n"
            if t is not None:
                c.protect(path, t.encode())
            return read_results(path)
        cases.append(E(a, f"read_results({label})", call, "results", "column", "csv", "No such file",
                       check=(lambda r, c: r == []) if content == "" else None, item="23" if "column" in label else ""))
    for label, root in (("None", None), ("123", 123), ("a file", "FILE"), ("a read-only folder", "RO")):
        def call(c, r=root):
            if r == "FILE":
                r = c.protect(c.tmp / "root.txt")
            elif r == "RO":
                r = c.readonly(c.tmp / "ro")
            return fresh_run_dir(r)
        cases.append(E(a, f"fresh_run_dir({label})", call, "root", "folder", "read-only", item="22"))
    cases.append(OK(a, "fresh_run_dir after run-999", lambda c: ((c.tmp / "r" / "run-999").mkdir(parents=True),
                                                                  fresh_run_dir(c.tmp / "r"))[1],
                    lambda r, c: True if r.name == "run-1000" else f"{r.name}"))
    return cases


def _no_partial_results(ctx):
    """results.csv, where it exists, must be whole: a header and one row per job."""
    for path in (ctx.tmp / "study").glob("run-*/results.csv"):
        lines = path.read_text().splitlines()
        if len(lines) != 3:
            return f"left a partial results.csv ({len(lines)} lines of 3)"
    return None


def _valid_json(path):
    try:
        json.loads(Path(path).read_text())
        return True
    except ValueError:
        return False


# ---- the studio -------------------------------------------------------------------------------------

def _studio(ctx, **options):
    import helpers

    return helpers.Studio(ctx.pipe, preview=False, **options)


def _submitted(ctx, studio=None, **changes):
    """Submit settings to a studio and wait: its error (shown in the panel) is raised here."""
    studio = studio or _studio(ctx)
    settings = {**studio.settings(), **SMALL, **changes}
    status = studio.submit(settings)
    studio.wait_idle(60)
    if studio.last_error is not None:
        raise studio.last_error
    return status


def studio_cases():
    import helpers

    a = "studio"
    cases = []
    for label, pipe in (("None", None), ("'tiny'", "tiny"), ("a released pipeline", "RELEASED")):
        def call(c, p=pipe):
            if p == "RELEASED":
                p = fresh_pipe()
                helpers.release_pipeline(p)
                c.start()
            return helpers.Studio(p)
        cases.append(E(a, f"Studio({label})", call, "pipeline", "released", "studio"))
    for label, options, names in (
            ("prompt=123", dict(prompt=123), ("prompt",)),
            ("negative_prompt=123", dict(negative_prompt=123), ("negative_prompt",)),
            ("save_dir=None", dict(save_dir=None), ("save_dir",)), ("save_dir=123", dict(save_dir=123), ("save_dir",)),
            ("history_size=0", dict(history_size=0), ("history_size",)),
            ("history_size='8'", dict(history_size="8"), ("history_size",)),
            ("history_size=1.5", dict(history_size=1.5), ("history_size",)),
            ("cache_size=-1", dict(cache_size=-1), ("cache_size",)), ("cache_size=True", dict(cache_size=True), ("cache_size",)),
            ("preview='no'", dict(preview="no"), ("preview",)), ("unknown option", dict(seed=3), ("seed",))):
        def call(c, o=options):
            return helpers.Studio(c.pipe, **o)
        cases.append(E(a, f"Studio({label})", call, *names, item="23" if "prompt=123" in label else ""))
    for label, settings in (("{}", {}), ("None", None), ("a str", "a cat"), ("a list", [])):
        cases.append(E(a, f"Studio.submit({label})", lambda c, s=settings: _studio(c).submit(s), "settings", item="23"))
    for label, change, normal in (("seed=True", dict(seed=True), dict(seed=1)), ("height=32.0", dict(height=32.0), dict(height=32)),
                                  ("guidance_scale=True", dict(guidance_scale=True), dict(guidance_scale=1.0)),
                                  ("num_inference_steps=2.0", dict(num_inference_steps=2.0), dict(num_inference_steps=2))):
        def call(c, ch=change, n=normal):
            studio = _studio(c)
            _submitted(c, studio, **n)  # the valid twin, now in the cache
            c.start()
            return _submitted(c, studio, **ch)
        cases.append(E(a, f"Studio.submit({label}) after its valid twin", call, *change.keys(), item="6", timeout=60))
    for label, change in (("prompt=123", dict(prompt=123)), ("prompt=''", dict(prompt="")), ("height=17", dict(height=17)),
                          ("guidance_scale=nan", dict(guidance_scale=NAN)), ("seed=-1", dict(seed=-1)),
                          ("an unknown key", dict(steps=2)), ("no prompt key", dict(prompt=_DROP))):
        def call(c, ch=change):
            studio = _studio(c)
            settings = {**studio.settings(), **SMALL, **ch}
            settings = {k: v for k, v in settings.items() if v is not _DROP}
            studio.submit(settings)
            studio.wait_idle(60)
            if studio.last_error is not None:
                raise studio.last_error
        key = next(iter(change))
        cases.append(E(a, f"Studio.submit({label})", call, key, timeout=60))
    for label, result in (("None", None), ("123", 123), ("a recipe dict", "DICT"), ("a result without seed", "NOSEED")):
        def call(c, r=result):
            if r == "DICT":
                r = c.result.recipe
            elif r == "NOSEED":
                r = dataclasses.replace(c.result, recipe=_recipe(c, seed=_DROP))
            return _studio(c).restore(r)
        cases.append(E(a, f"Studio.restore({label})", call, "result", "recipe", "seed", item="23"))
    cases.append(OK(a, "Studio.restore(a 48x48 result)", lambda c: _studio(c).restore(gen(c, height=48)),
                    lambda r, c: True))
    for label, timeout in (("'x'", "x"), ("None", None), ("nan", NAN)):
        def call(c, t=timeout):
            studio = _studio(c)
            studio.submit({**studio.settings(), **SMALL})
            studio.wait_idle(t)
            studio.wait_idle(60)
        cases.append(E(a, f"Studio.wait_idle({label}) while busy", call, "timeout", item="23"))
    for label, save_dir in (("a file", "FILE"), ("a read-only folder", "RO")):
        def call(c, s=save_dir):
            s = c.protect(c.tmp / "studio.txt") if s == "FILE" else c.readonly(c.tmp / "ro")
            studio = _studio(c, save_dir=s)
            _submitted(c, studio)
            c.start()
            return studio.save()
        cases.append(E(a, f"Studio.save() into {label}", call, "save_dir", "folder", "read-only", item="22", timeout=60))
    cases.append(OK(a, "Studio.save() with nothing shown", lambda c: _studio(c).save(), equals(None)))

    def save_full(c):
        studio = _studio(c)
        _submitted(c, studio)
        with full_disk(r"\.png$", 10):
            return studio.save()
    cases.append(DISK(a, "Studio.save() on a full disk", save_full, no_files_left("studio"), timeout=60))

    def ten(c):
        import threading
        studio = _studio(c)
        base = {**studio.settings(), **SMALL}
        threads = [threading.Thread(target=studio.submit, args=({**base, "seed": s},)) for s in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        studio.wait_idle(60)
        return studio
    cases.append(OK(a, "ten simultaneous submits", ten,
                    lambda r, c: True if r.last_error is None and not r.busy and r.generations >= 1 else f"{r.last_error!r}",
                    timeout=90))

    def cancel_drops_queued(c):
        studio = _studio(c)
        base = {**studio.settings(), "height": 64, "width": 64, "num_inference_steps": 20}
        studio.submit({**base, "seed": 1})
        studio.submit({**base, "seed": 2})
        studio.cancel()
        studio.wait_idle(60)
        return studio
    cases.append(OK(a, "cancel drops the queued request", cancel_drops_queued,
                    lambda r, c: True if all(h.recipe["seed"] != 2 for h in r.history) else "the queued image ran",
                    item="24", timeout=60))
    for label, kwargs in (("pipe_b='tiny'", dict(pipe_b="tiny")), ("pipe_b and negative_prompt_b", "BOTH"),
                          ("None", "NONE"), ("prompt=123", dict(prompt=123))):
        def call(c, k=kwargs):
            if k == "BOTH":
                return helpers.ABStudio(c.pipe, c.pipe, negative_prompt_b="x")
            if k == "NONE":
                return helpers.ABStudio(None)
            return helpers.ABStudio(c.pipe, **k)
        cases.append(E(a, f"ABStudio({label})", call, "pipe", "pipeline", "negative_prompt_b", "prompt"))
    return cases


# ---- quantized checkpoints ------------------------------------------------------------------------------

def _nf4_pipe():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from bnb_cpu_shim import bnb_cpu_shim  # lets bitsandbytes quantize on this CPU (as the tests do)

    import helpers

    with bnb_cpu_shim():
        return helpers.load_pipeline("sd35-large-nf4", stand_in=True, keep_previous=True)


def quantized_cases():
    from helpers.loading.quantized_checkpoints import save_quantized

    a = "quantized"
    cases = []
    for label, pipe in (("'tiny'", "tiny"), ("None", None), ("123", 123)):
        cases.append(E(a, f"save_quantized({label})", lambda c, p=pipe: save_quantized(p, c.tmp / "q"), "pipe",
                       "pipeline", item="11" if label == "'tiny'" else ""))
    cases.append(E(a, "save_quantized(an unquantized pipeline)", lambda c: save_quantized(c.pipe, c.tmp / "q"), "quantized"))
    for label, folder in (("a non-empty folder", "FULL"), ("a file", "FILE"), ("None", None), ("123", 123)):
        def call(c, f=folder):
            if f == "FULL":
                c.protect(c.tmp / "q" / "mine.txt")
                f = c.tmp / "q"
            elif f == "FILE":
                f = c.protect(c.tmp / "q.txt")
            pipe = _nf4_pipe()
            c.start()
            return save_quantized(pipe, f)
        cases.append(E(a, f"save_quantized(folder={label})", call, "folder", "exists", item="22", timeout=90))

    def disk_full(c):
        pipe = _nf4_pipe()
        with file_size_limit(4096):
            save_quantized(pipe, c.tmp / "q")

    def reload_or_clean(c):
        folder = c.tmp / "q"
        if not folder.exists() or not any(folder.rglob("*")):
            return None
        try:
            from bnb_cpu_shim import bnb_cpu_shim  # on sys.path since _nf4_pipe

            import helpers
            with bnb_cpu_shim():
                helpers.load_pipeline("sd35-large-nf4", stand_in=True, keep_previous=True, transformer=str(folder))
        except Exception as e:
            return f"left a half-written checkpoint that does not load: {type(e).__name__}: {str(e)[:80]}"
        return None
    cases.append(DISK(a, "save_quantized on a full disk", disk_full, reload_or_clean, item="3", timeout=120))
    cases.append(OK(a, "save_quantized(nf4 pipeline, new folder)", lambda c: save_quantized(_nf4_pipe(), c.tmp / "q"),
                    lambda r, c: True if (c.tmp / "q" / "transformer" / "config.json").is_file() else f"{r}", timeout=90))
    return cases


# ---- hardware profiles ------------------------------------------------------------------------------

def profile_cases():
    from helpers.loading import hardware_profiles as hp

    a = "profiles"
    t4 = lambda: hp.get_profile("free Colab T4")  # noqa: E731
    cases = []
    for label, name in (("None", None), ("'T4'", "T4"), ("123", 123)):
        cases.append(E(a, f"get_profile({label})", lambda c, n=name: hp.get_profile(n), "profile"))
    for label, profile in (("'free Colab T4' (a name)", "free Colab T4"), ("None", None)):
        def call(c, p=profile):
            with hp.on_profile(p):
                pass
        cases.append(E(a, f"on_profile({label})", call, "profile", item="23"))
    for label, args in (("'x'", ("x",)), ("model 'bogus'", ("T4", "bogus")), ("offload 'yes'", ("T4", "sd35-large", "yes"))):
        def call(c, x=args):
            profile = t4() if x[0] == "T4" else x[0]
            options = {"offload": x[2]} if len(x) > 2 else {}
            return hp.plan_on(profile, *x[1:2], **options)
        cases.append(E(a, f"plan_on({label})", call, "profile", "preset", "model", "offload"))
    # One preset name is one model (as in this_machine_plans), not its letters: the rows of that model.
    cases.append(OK(a, "profile_plans(models='sd35-large')", lambda c: hp.profile_plans(models="sd35-large"),
                    lambda r, c: True if r and {row["model"] for row in r} == {"sd35-large"} else f"{r!r:.200}", item="23"))
    for label, kwargs in (("models=[]", dict(models=[])),
                          ("profiles=['x']", dict(profiles=["x"])), ("models=None", dict(models=None))):
        cases.append(E(a, f"profile_plans({label})", lambda c, k=kwargs: hp.profile_plans(**k), "models", "profiles",
                       check=(lambda r, c: r == []) if "[]" in label else None))
    for label, profile in (("'x'", "x"), ("None", None)):
        cases.append(E(a, f"fitting_plan({label})", lambda c, p=profile: hp.fitting_plan(p), "profile"))
    cases.append(E(a, "colab_t4_plan(transformer=123)", lambda c: hp.colab_t4_plan(123), "transformer"))
    # The folder is the reader's on the planned machine (e.g. on Colab's Drive): it need not exist here.
    cases.append(OK(a, "colab_t4_plan(transformer='/nonexistent')", lambda c: hp.colab_t4_plan("/nonexistent"),
                    lambda r, c: True if r.get("transformer", "/nonexistent") == "/nonexistent" else f"{r}"))
    cases.append(OK(a, "colab_t4_plan()", lambda c: hp.colab_t4_plan(), lambda r, c: True if isinstance(r, dict) else f"{r}"))
    return cases


# ---- CLIP -------------------------------------------------------------------------------------------

def clip_cases():
    from helpers.studies.clip_score import ClipScorer

    a = "clip"
    cases = []
    for label, model in (("'/nonexistent'", "/nonexistent"), ("None", None), ("123", 123), ("an empty folder", "EMPTY")):
        def call(c, m=model):
            if m == "EMPTY":
                (c.tmp / "clip").mkdir()
                m = str(c.tmp / "clip")
            return ClipScorer.load(m, device="cpu")
        cases.append(E(a, f"ClipScorer.load({label})", call, "model", "CLIP", "folder", "not found", item="23"))
    cases.append(E(a, "ClipScorer.load(device='cuda')", lambda c: ClipScorer.load(str(_tiny_clip()), device="cuda"),
                   "device", "cuda", "GPU"))
    image = lambda c: c.result.image  # noqa: E731
    for label, call, names in (
            ("score([None], ['a'])", lambda c: c.clip.score([None], ["a"]), ("image",)),
            ("score(['a.png'], ['a'])", lambda c: c.clip.score(["a.png"], ["a"]), ("image",)),
            ("score([], [])", lambda c: c.clip.score([], []), ("image", "empty")),
            ("score([image], ['a', 'b'])", lambda c: c.clip.score([image(c)], ["a", "b"]), ("texts", "images")),
            ("score([image], [None])", lambda c: c.clip.score([image(c)], [None]), ("text",)),
            ("score(image, 'a') (one image, not a list)", lambda c: c.clip.score(image(c), "a"), ("image",)),
            ("zero_shot([], labels)", lambda c: c.clip.zero_shot([], ["a", "b"]), ("image", "empty")),
            ("zero_shot([image], ['a'])", lambda c: c.clip.zero_shot([image(c)], ["a"]), ("labels",)),
            ("zero_shot([image], 'ab')", lambda c: c.clip.zero_shot([image(c)], "ab"), ("labels",)),
            ("zero_shot([None], labels)", lambda c: c.clip.zero_shot([None], ["a", "b"]), ("image",)),
            ("zero_shot([image], [1, 2])", lambda c: c.clip.zero_shot([image(c)], [1, 2]), ("labels", "text"))):
        cases.append(E(a, label, call, *names, item="23" if label.startswith(("zero_shot([]", "score([None]")) else ""))
    cases.append(OK(a, "score([image], 'a cat') (one text for all)", lambda c: c.clip.score([image(c)], "a cat"),
                    lambda r, c: True if r.shape == (1,) else f"{r.shape}"))
    return cases


def _tiny_clip():
    from helpers.stand_in import tiny_clip_dir

    return tiny_clip_dir()


# ---- measuring in a subprocess (tools/subprocess_probe) ---------------------------------------------------------

def subprocess_cases():
    from tools.subprocess_probe import measure_in_subprocess as measure

    a = "subprocess"
    cases = []
    for label, code in (("None", None), ("empty", ""), ("123", 123)):
        cases.append(E(a, f"measure_in_subprocess({label})", lambda c, x=code: measure(x), "code"))
    for label, env in (("{'A': 1}", {"A": 1}), ("'x'", "x"), ("[]", [])):
        cases.append(E(a, f"measure_in_subprocess(env={label})", lambda c, e=env: measure("result = 1", env=e), "env",
                       item="23" if "'A'" in label else "", check=(lambda r, c: True) if env == [] else None))
    for label, timeout in (("-1", -1), ("0", 0), ("nan", NAN), ("'x'", "x")):
        cases.append(E(a, f"measure_in_subprocess(timeout={label})", lambda c, t=timeout: measure("result = 1", timeout=t),
                       "timeout", item="11" if label == "-1" else ""))
    cases.append(E(a, "measure_in_subprocess(an endless loop, timeout=1)",
                   lambda c: measure("while True: pass", timeout=1), "ran past", "timeout"))
    cases.append(OK(a, "measure_in_subprocess('result = 1')", lambda c: measure("result = 1"),
                    lambda r, c: True if r["result"] == 1 else f"{r}"))
    cases.append(OK(a, "measure_in_subprocess(code that raises)", lambda c: measure("1/0"),
                    lambda r, c: True if "ZeroDivisionError" in (r.get("error") or "") else f"{r}"))
    cases.append(OK(a, "measure_in_subprocess does not pass the token to printed results",
                    lambda c: measure("import os\nresult = len(os.environ.get('HF_TOKEN') or '')"),
                    lambda r, c: True))
    return cases




# The cases that re-try an input issue 20 lists, by item: the summary marks them "(#20 item N)", so
# every other outcome that is not ok or clear is a new finding.
ISSUE_20 = {
    "1": ["a full disk while results.csv is written, then resume"],
    "2": ["resume after a torn last row", "a full disk while a row is appended, then resume"],
    "3": ["save_quantized on a full disk"],
    "4": ["save_png_with_recipe(recipe seed '../x')", "save_png_with_recipe(stem='../escape')",
          "save_png_with_recipe(stem=absolute)"],
    "5": ["plan_loading(drop_t5='no')", "plan_loading(quantize_t5='no')", "plan_loading(stand_in='no')",
          "plan_loading(stand_in='false')", "load_pipeline(keep_previous='no')", "SD35_STAND_IN=off"],
    "6": ["Studio.submit(seed=True) after its valid twin", "Studio.submit(height=32.0) after its valid twin",
          "Studio.submit(guidance_scale=True) after its valid twin"],
    "7": ["editing a cached tensor in place"],
    "8": ["run_study(labels='ab')", "run_study(labels=['', ''])"],
    "9": ["plan_loading(free_bytes=nan) on a T4", "plan_loading(free_bytes='1e9') on a T4",
          "plan_loading(host_bytes='1e9') on a T4"],
    "10": ["model_id(None)", "model_id(123)", "model_id('sd35-larg')"],
    "11": ["format_bytes(nan)", "working_bytes(size -1024)", "smallest_possible_p_value(-1)",
           "measure_in_subprocess(timeout=-1)", "save_quantized('tiny')", "read_png_recipe(recipe is a JSON list)",
           "save_png_with_recipe(recipe guidance nan)", "parse_a1111_parameters('a cat' (no settings line))"],
    "12": ["xy_grid(a height axis)", "xy_grid(a width axis)"],
    "13": ["xy_grid(a 1,000,000-cell axis)"],
    "14": ["image_grid(title=123)", "xy_grid(title=123)"],
    "15": ["check_jobs(job job_id '../../evil')", "check_jobs(job job_id 1.5)", "check_jobs(job job_id None)",
           "check_jobs(job condition None)", "check_jobs(job condition 123)", "check_jobs(job seed numpy int64)",
           "run_study(a job with job_id '../../evil')", "run_study(a job with condition None)"],
    "16": ["hand-built embeddings: NaN values"],
    "17": ["callback=no arguments", "callback=one argument", "callback=four required"],
    "18": ["hand-built embeddings: wrong width", "hand-built embeddings: batch of 2",
           "hand-built embeddings: mismatched sequence lengths", "hand-built embeddings: float64",
           "hand-built embeddings: None tensor", "hand-built embeddings: a string"],
    "19": ["load_pipeline('../..')", "load_pipeline(10,000 characters)",
           "load_pipeline(local folder: empty, stand_in=False)",
           "load_pipeline(local folder: broken model_index.json, stand_in=False)",
           "load_pipeline(local folder: config without weights, stand_in=False)",
           "load_pipeline(local folder: truncated safetensors, stand_in=False)"],
    "20": ["load_pipeline(misspelt id, stand_in=False) with a token"],
    "21": ["save_png_with_recipe(recipe missing seed)", "save_png_with_recipe(recipe missing num_inference_steps)",
           "save_png_with_recipe(recipe=None)", "read_png_recipe(recipe is malformed JSON)", "read_png_recipe(a text file)",
           "read_png_recipe(None)", "save_png_with_recipe(image=mode F)", "save_png_with_recipe(image=0x0)"],
    "22": ["save_png_with_recipe(folder=a file)", "save_png_with_recipe(folder=None)", "save_png_with_recipe(folder=123)",
           "Studio.save() into a file", "run_study(root=a file)", "run_study(root=None)", "run_study(root=123)"],
    "23": ["recipe_arguments(None)", "recipe_arguments({})", "recipe_arguments(a list)", "recipe_arguments(missing seed)",
           "recipe_arguments(a str)", "image_grid(rows='2')", "image_grid(images=[None, None])",
           "image_grid(images=file names)", "image_grid(images=numpy arrays)", "image_grid(rows=1.5)",
           "xy_grid(x not a pair)", "xy_grid(x a 3-tuple)", "xy_grid(axis values None)", "xy_grid(axis values an int)",
           "xy_grid(axis name an int)", "release_pipeline('tiny')", "on_profile('free Colab T4' (a name))",
           "profile_plans(models='sd35-large')", "Studio.submit({})", "Studio.submit(None)", "Studio.restore(None)",
           "Studio.wait_idle('x') while busy", "check_jobs(None)", "format_bytes('x')", "component_footprints(None)",
           "loaded_bytes(None, bfloat16)", "working_bytes('nope')", "bootstrap_mean_ci('abc')",
           "bootstrap_mean_ci(resamples=0)", "format_p('x')", "measure_in_subprocess(env={'A': 1})", "is_cached(None)",
           "read_results(a column missing)", "guidance_scale=10**400", "PeakMemory('cuda' without a GPU)",
           "Stopwatch('cuda' without a GPU)", "ClipScorer.load('/nonexistent')", "zero_shot([], labels)",
           "score([None], ['a'])", "Studio(prompt=123)"],
    "24": ["cancel drops the queued request"],
    "25": ["resume after the finished rows' PNGs were deleted"],
}


# ---- round 4 (issue 27 §5): one case per class of the property tests in this folder ---------------------------

def round4_cases() -> list[Case]:
    """The inputs of hardening round 4, tried as a reader would; the property tests beside this file
    generate many more of each class."""
    from PIL import Image

    a = "round4"
    recipe = {"prompt": "a cat", "negative_prompt": None, "guidance_scale": 3.5, "num_inference_steps": 4,
              "seed": 1, "height": 8, "width": 8}

    def save_past_a_dangling_link(ctx):
        from helpers.generation.png_metadata import save_png_with_recipe

        (ctx.tmp / "sd35-seed1.png").symlink_to(ctx.tmp / "gone.png")
        return save_png_with_recipe(Image.new("RGB", (8, 8)), recipe, ctx.tmp)

    def dangling_save_dir(ctx):
        from helpers.studio.view import Studio

        (ctx.tmp / "studio").symlink_to(ctx.tmp / "not-made")
        return Studio(ctx.pipe, save_dir=ctx.tmp / "studio")

    def slow_regex(ctx):
        from helpers.generation.png_metadata import parse_a1111_parameters

        return parse_a1111_parameters("Steps: 1, " + "a" * 300_000)

    def reenter(ctx):  # the error comes at the first step by nature: the case checks its words and what follows
        try:
            gen(ctx, callback=lambda step, total, latents: gen(ctx))
        except RuntimeError as e:
            return str(e), gen(ctx).image.size
        return "no error", None

    def gguf_of_none(ctx):
        from helpers.loading.gguf_checkpoints import write_gguf

        return write_gguf(None, ctx.tmp / "x.gguf")

    def encode_with_bad_offload(ctx):
        from helpers.loading.staged_t5 import encode_with_t5

        return encode_with_t5("a cat", "tiny", offload="bogus")

    return [
        OK(a, "save_png_with_recipe past a dangling link", save_past_a_dangling_link,
           lambda r, c: True if r.name == "sd35-seed1-2.png" else f"saved as {r.name}", timeout=20),
        E(a, "Studio(save_dir=<dangling link>)", dangling_save_dir, "save_dir", "symbolic link"),
        OK(a, "parse_a1111_parameters of 300 kB", slow_regex, lambda r, c: True if r["Steps"] == "1" else repr(r),
           timeout=20),
        E(a, "seed=5 + 2**32 (aliases seed 5)", lambda c: gen(c, seed=5 + 2**32), "seed"),
        E(a, "encode_with_t5(offload='bogus')", encode_with_bad_offload, "offload"),
        E(a, "encode_with_t5(None)", lambda c: __import__("helpers.loading.staged_t5").loading.staged_t5
          .encode_with_t5(None, "tiny"), "prompts"),
        OK(a, "generate from generate's step callback", reenter,
           lambda r, c: True if "inside a step callback" in r[0] and r[1] else repr(r)),
        E(a, "write_gguf(None)", gguf_of_none, "transformer"),
    ]


def all_cases() -> list[Case]:
    cases = [*generate_cases(), *embedding_cases(), *loading_cases(), *hub_cases(), *measuring_cases(),
             *stats_cases(), *grid_cases(), *png_cases(), *study_cases(), *studio_cases(), *quantized_cases(),
             *profile_cases(), *clip_cases(), *subprocess_cases(), *round4_cases()]
    items = {name: item for item, names in ISSUE_20.items() for name in names}
    for case in cases:
        case.item = items.get(case.name, "")
    return cases
