"""Notebook 01 runs the blog's code top to bottom on the stand-in: NF4 through the test shim, and
bf16 when diffusers refuses to quantize without a GPU (the kernel a reader without a GPU gets)."""

import re

import pytest
from notebook_harness import cell_outputs_text, executed_once


@pytest.fixture(scope="module")
def executed(tmp_path_factory, tiny_dir):
    return executed_once("01_quantized_loading.ipynb", tmp_path_factory, SIZE=64, STEPS=2)


# Executed twice, on purpose: each run takes the branch the other cannot. With the test shim the
# blog's NF4 code really quantizes (Linear4bit layers, the NF4 footprint table); without it diffusers
# refuses NF4 as on a reader's GPU-less machine, and the notebook must fall back to bf16 and say so.
@pytest.fixture(scope="module")
def executed_without_gpu(tmp_path_factory, tiny_dir):
    return executed_once("01_quantized_loading.ipynb", tmp_path_factory, bnb_cpu_shim=False, SIZE=64, STEPS=2)


def image_outputs(nb):
    return [o for c in nb["cells"] for o in c.get("outputs", []) if "image/png" in o.get("data", {})]


def test_dtype_rename_is_shown_from_diffusers_itself(executed):
    _, nb = executed
    text = cell_outputs_text(nb)
    assert "def _resolve_dtype(dtype, torch_dtype):" in text
    assert "Pipeline, passing both: You have passed both `dtype` and `torch_dtype`" in text
    # A model's from_pretrained takes either name silently, `dtype` winning (the prose says so).
    assert "torch_dtype = dtype if dtype is not None else torch_dtype" in text


def test_blog_code_runs_in_nf4_and_shows_its_image(executed):
    out, nb = executed
    text = cell_outputs_text(nb)
    assert "bitsandbytes.nn.modules.Linear4bit layers, NF4" in text
    # No GPU here: diffusers' own refusal of offload is printed, and the image is still made.
    assert "`enable_model_cpu_offload` requires accelerator, but not found" in text
    assert re.search(r"64x64 px, 2 steps, guidance 4\.5, NF4 transformer, [\d.]+ s on cpu", text)
    assert (out / "outputs" / "blog_code_image.png").stat().st_size > 100
    assert len(image_outputs(nb)) >= 2  # the image, then the footprint chart
    assert "quantization block size: 64 weights share one scale" in text


def markdown_source(nb, heading):
    return next("".join(c["source"]) for c in nb["cells"] if "".join(c["source"]).startswith(heading))


def test_nf4_prose_says_exactly_what_the_count_shows(executed):
    """Every Linear layer is 4-bit (diffusers skips none), and the prose names exactly the tensor kinds
    the cell found still in bf16, no more, no fewer."""
    _, nb = executed
    text = cell_outputs_text(nb)
    m = re.search(r"(\d+) of the transformer's (\d+) Linear layers are Linear4bit", text)
    assert m and int(m.group(1)) == int(m.group(2)) > 0
    assert "_keep_in_fp32_modules: None · llm_int8_skip_modules: None" in text
    kinds = re.findall(r"(\w+\.\w+) \([\d,]+ values\)", re.search(r"still bf16: (.*)", text).group(1))
    prose = markdown_source(nb, "## What quantization did to the transformer")
    assert "**every** `nn.Linear`" in prose
    named = set(re.findall(r"`([A-Z]\w*\.\w+)`", prose))  # `Module.tensor`, not `nn.Linear`
    assert set(kinds) == named and len(kinds) == len(set(kinds)) >= 4
    from helpers import PRESETS

    count = PRESETS["sd35-large"].census["transformer"]  # the full-size model: every Linear counted, none kept
    assert count.kept_fp32 == 0
    assert f"the weights of all {count.linear_layers} Linear layers in 4 bits" in text
    assert f"the {count.other / 1e6:.1f} million values that are not Linear weights" in text


def test_values_are_attributed_to_their_sources(executed):
    """The HF blog's call is what runs (its values quoted once, in prose and code alike); the toolkit's
    guidance, the model card's and diffusers' defaults are printed beside it, each with its source."""
    import inspect

    from diffusers import StableDiffusion3Pipeline

    from helpers import PRESETS

    _, nb = executed
    text = cell_outputs_text(nb)
    defaults = inspect.signature(StableDiffusion3Pipeline.__call__).parameters
    card, toolkit = PRESETS["sd35-large-nf4"].model_card, PRESETS["sd35-large-nf4"].blog
    assert "This run: 2 steps (set above), guidance 4.5 (the HF blog)." in text
    assert "| HF blog, NF4 snippet (huggingface.co/blog/sd3-5) | 28 | 4.5 | 512 |" in text
    assert f"| {toolkit.source} | default | {toolkit.guidance_scale:g} | default |" in text
    assert f"| {card.source} | {card.num_inference_steps} | {card.guidance_scale:g} |" in text
    assert (f"| diffusers' defaults (StableDiffusion3Pipeline.__call__) | {defaults['num_inference_steps'].default} | "
            f"{defaults['guidance_scale'].default:g} | {defaults['max_sequence_length'].default} |") in text
    # The prose's quotes of both sources match the code that runs, and its "default is 256" holds.
    sources = ["".join(c["source"]) for c in nb["cells"]]
    code = next(s for s in sources if "HF_BLOG_CALL = dict(" in s)
    assert 'dict(negative_prompt="", num_inference_steps=28, guidance_scale=4.5, max_sequence_length=512)' in code
    prose = next(s for s in sources if s.startswith("## The blog's code"))
    assert '`negative_prompt="", num_inference_steps=28, guidance_scale=4.5, max_sequence_length=512`' in prose
    assert "`value=7.5`" in prose and toolkit.guidance_scale == 7.5
    assert defaults["max_sequence_length"].default == 256
    assert "the pipeline's default is 256" in next(s for s in sources if s.startswith("**Step 4"))
    parameters = "".join(nb["cells"][2]["source"])
    assert "as in the blog" not in parameters


def test_free_colab_t4_warning_holds_and_the_blog_cells_come_first(executed):
    """The T4 warning: measured host peak (committed GPU check) above what the T4 profile leaves, the
    fp16 T5 larger than bf16, and the planner's T4 plan, all shown before anything loads."""
    import torch

    from helpers import colab_t4_plan, format_bytes
    from helpers.loading import hardware_profiles, plan_benchmarks
    from helpers.loading.planner import describe_options

    _, nb = executed
    text = cell_outputs_text(nb)
    row = next(row for r in plan_benchmarks.gpu_results() for row in r["rows"]
               if row["plan"] == "NF4 + model CPU offload" and "host_peak_load_bytes" in row)
    t4 = hardware_profiles.get_profile("free Colab T4")
    assert row["host_peak_load_bytes"] > t4.host_available_bytes  # "runs out of host RAM" holds
    on_t4 = hardware_profiles.plan_on(t4, "sd35-large-nf4", offload="model", drop_t5=False, quantize_t5=False)
    big = hardware_profiles.plan_on(hardware_profiles.get_profile("A100 80 GB"), "sd35-large-nf4")
    assert on_t4.dtype == torch.float16
    assert on_t4.estimated_bytes["text_encoder_3"] > big.estimated_bytes["text_encoder_3"]  # "larger" holds
    assert f"host RAM peaked at **{format_bytes(row['host_peak_load_bytes'])}** while loading" in text
    assert f"leaves about **{format_bytes(t4.host_available_bytes)}** of its RAM" in text
    assert f"T5-XXL alone takes {format_bytes(on_t4.estimated_bytes['text_encoder_3'])} against" in text
    assert f"`{describe_options(colab_t4_plan())}`" in text
    # The blog's cells come first; the prerequisites warn T4 readers before anything loads.
    sources = ["".join(c["source"]) for c in nb["cells"]]
    warning = next(i for i, s in enumerate(sources) if "On a free Colab T4 the blog's code runs out of host RAM" in s)
    first_load = next(i for i, s in enumerate(sources) if "SD3Transformer2DModel.from_pretrained(" in s)
    measured = next(i for i, s in enumerate(sources) if "**On a free Colab T4 the blog's code runs out" in s)
    planner = next(i for i, s in enumerate(sources) if "hardware_profiles.plan_on(" in s)
    assert warning < first_load < planner and first_load < measured


def test_without_a_gpu_the_same_code_runs_in_bf16(executed_without_gpu):
    out, nb = executed_without_gpu
    text = cell_outputs_text(nb)
    assert "No GPU found" in text and "builds the pipeline with the bf16 transformer" in text
    assert "torch.nn.modules.linear.Linear layers, bf16" in text
    assert re.search(r"64x64 px, 2 steps, guidance 4\.5, bf16 transformer, [\d.]+ s on cpu", text)
    assert (out / "outputs" / "blog_code_image.png").stat().st_size > 100
    assert "NF4 pipeline (needs a GPU: not loaded)" in text and "| bf16 (measured) |" in text


def test_footprint_table_and_computed_prose(executed):
    out, nb = executed
    text = cell_outputs_text(nb)
    m = re.search(r"The NF4 transformer takes \*\*[\d.]+ [KMG]iB\*\* against [\d.]+ [KMG]iB in bf16: ([\d.]+)x smaller", text)
    assert m and float(m.group(1)) > 1.0  # the stand-in keeps big non-Linear tensors (pos_embed)
    from helpers.loading import hardware_profiles

    big = hardware_profiles.get_profile("A100 80 GB")
    exact = (hardware_profiles.plan_on(big, "sd35-large").estimated_bytes["transformer"]
             / hardware_profiles.plan_on(big, "sd35-large-nf4").estimated_bytes["transformer"])
    assert 3.3 < exact < 4.0  # under 4x: block scales and the layers bitsandbytes leaves in bf16
    assert "8.1 billion parameters (published count)" in text and f"{exact:.2f}x smaller" in text
    assert "GPU memory for SD3.5 Large with an NF4 transformer" in text
    # No second, full bf16 pipeline just for the table: the planner's exact count is its bf16 column.
    assert "| bf16 (the planner's exact count) | NF4 pipeline (measured) |" in text
    code = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    footprint_cell = next(s for s in code if "footprint_rows" in s)
    assert "from_pretrained" not in footprint_cell and "psutil" not in footprint_cell
    # Pipelines are built only by the dtype demo and by the blog's step 2.
    assert sum("StableDiffusion3Pipeline.from_pretrained(" in s for s in code) == 2
    assert text.count("OFFLINE STAND-IN: random weights") == 1
    assert (out / "outputs" / "figures" / "footprint_bf16_vs_nf4.png").stat().st_size > 1000


def test_everything_written_lands_in_the_ignored_outputs_folder(executed):
    out, _ = executed
    assert sorted(p.name for p in out.iterdir()) == ["01_quantized_loading.ipynb", "outputs"]
