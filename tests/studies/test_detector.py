"""The prompt-independent detector (OWL-ViT, tiny and random offline) and agreement with hand labels."""

import math

import pytest
import torch
from PIL import Image

from helpers.stand_in import is_stand_in
from helpers.studies.detector import REAL_DETECTOR, ObjectDetector, agreement, detector_model_id


@pytest.fixture(scope="module")
def detector():
    return ObjectDetector.load(detector_model_id(True), device="cpu")


def test_the_offline_detector_is_a_marked_stand_in_loaded_the_usual_way(detector):
    from transformers import OwlViTForObjectDetection

    assert detector_model_id(False) == REAL_DETECTOR == "google/owlvit-base-patch32"
    assert is_stand_in(detector_model_id(True)) and isinstance(detector.model, OwlViTForObjectDetection)


def test_presence_is_one_probability_per_image_its_best_box(detector):
    images = [Image.new("RGB", (64, 64), (200, 30, 30)), Image.new("RGB", (96, 64), (20, 20, 220))]
    scores = detector.presence(images, "a birthday cake")
    assert scores.shape == (2,) and bool(((scores >= 0) & (scores <= 1)).all())
    # Its best box, by hand: the sigmoid of the model's box logits for the one query, maximised over boxes.
    inputs = detector.processor(text=[["a birthday cake"]], images=[images[0]], return_tensors="pt")
    with torch.no_grad():
        logits = detector.model(**inputs).logits
    assert scores[0].item() == pytest.approx(logits[0, :, 0].sigmoid().max().item(), abs=1e-6)
    assert detector.presence(images[1:], "a birthday cake")[0].item() == pytest.approx(scores[1].item(), abs=1e-5)
    in_ones = detector.presence(images * 2, "a birthday cake", batch_size=1)  # batched a few at a time: the same
    assert torch.allclose(in_ones, scores.repeat(2), atol=1e-5)


@pytest.mark.parametrize("images, query, error", [
    ([], "a cake", ValueError), ("x.png", "a cake", TypeError), ([Image.new("RGB", (8, 8))], " ", ValueError),
])
def test_bad_input_is_one_clear_error(detector, images, query, error):
    with pytest.raises(error):
        detector.presence(images, query)


def test_agreement_with_hand_labels_computed_by_hand():
    found = agreement([0.9, 0.2, 0.6, 0.4], [True, False, False, True])
    # At 0.5: 0.9 yes (right), 0.2 no (right), 0.6 yes (wrong), 0.4 no (wrong): 2 of 4.
    # AUC: present {0.9, 0.4} vs absent {0.2, 0.6}: 0.9 beats both, 0.4 beats 0.2 only: 3 of 4 pairs.
    assert found == dict(n=4, present=2, absent=2, accuracy=0.5, auc=0.75)
    empty = agreement([], [])  # the stand-in's check: nothing labelled
    assert empty["n"] == 0 and math.isnan(empty["accuracy"]) and math.isnan(empty["auc"])
    with pytest.raises(ValueError):
        agreement([0.5], [True, False])


@pytest.mark.parametrize("model_id, error, match", [
    ("/nonexistent", FileNotFoundError, "neither a Hub id .*nor a folder with a saved OWL-ViT model"),
    (None, TypeError, "model_id must be an OWL-ViT Hub id or folder"),
])
def test_loading_a_missing_detector_is_one_clear_error_before_any_loading(tmp_path, model_id, error, match):
    with pytest.raises(error, match=match):
        ObjectDetector.load(model_id, device="cpu")
    with pytest.raises(FileNotFoundError, match="neither a Hub id"):
        ObjectDetector.load(str(tmp_path), device="cpu")  # an empty folder
