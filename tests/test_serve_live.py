"""The live checks of `mnist-edge serve` over real HTTP: shadow agreement against `eval`'s, feedback
and its refusals, the paired live interval against compare's, the agreement threshold, collection
with its caps, kill -9 during collection, and collected samples back into a training run."""

import fractions
import json
import math
import os
import re
import signal
import threading
import time

import numpy as np
import pytest

from benchmarks import http_load
from conftest import run_cli
from serve_process import ServeProcess, call_json, make_bundle


@pytest.fixture(scope="module")
def bundle(fixture_bundle, tmp_path_factory):
    return make_bundle(fixture_bundle, tmp_path_factory.mktemp("live-bundle"))


@pytest.fixture(scope="module")
def test_images(bundle):
    with np.load(bundle / "test_set.npz") as archive:
        return archive["x_test"], archive["y_test"].astype(int)


@pytest.fixture(scope="module")
def disagreements(bundle, test_images):
    """Indices of test images where the bundle's int8 and float models give different labels, and where they agree."""
    from edge_runtime import Classifier

    images, _ = test_images
    int8 = np.array([Classifier.load(bundle / "model_int8.tflite").predict(image).labels[0] for image in images])
    float_ = np.array([Classifier.load(bundle / "model_f32.tflite").predict(image).labels[0] for image in images])
    return np.flatnonzero(int8 != float_), np.flatnonzero(int8 == float_)


def pixels_request(image):
    return http_load.Request("POST", "/api/predict", json.dumps({"pixels": image.tolist()}).encode(),
                             (("Content-Type", "application/json"),))


def predict_each(server, images, clients=2):
    """POST every image as JSON pixels, one per request; return each answer's one prediction."""
    responses = http_load.run("127.0.0.1", server.port, [pixels_request(image) for image in images], clients)
    assert [response.status for response in responses] == [200] * len(images), responses[0].body
    return [json.loads(response.body)["predictions"][0] for response in responses]


def live_info(server):
    status, info = call_json(server, "GET", "/api/info")
    assert status == 200
    return info["live"]


def test_shadow_agreement_at_rate_1_equals_evals_on_the_same_images(bundle, test_images):
    images, _ = test_images
    with ServeProcess(bundle, "--shadow-rate", "1", "--tolerance", "100") as server:
        predictions = predict_each(server, images)
        live = live_info(server)
        assert "Traceback" not in server.log_text()
    evaluated = run_cli("-m", "edge_runtime", "eval", str(bundle), "--json", "--tolerance", "100")
    assert evaluated.returncode == 0, evaluated.stderr
    (result,) = [entry for entry in json.loads(evaluated.stdout)["results"] if entry["model"] == "model_int8.tflite"]
    agreement = live["shadow"]["agreement"]
    print(f"shadow: {agreement['successes']}/{agreement['trials']}, eval: {result['agreement_with_float']}")
    assert agreement["trials"] == len(images) == result["images"]
    assert agreement["successes"] == round(result["agreement_with_float"] * len(images))
    assert agreement["value"] == pytest.approx(result["agreement_with_float"], abs=1e-12)
    assert sum(prediction["shadow"]["agrees"] for prediction in predictions) == agreement["successes"]
    assert agreement["successes"] < len(images)  # the fixture's test set holds images where int8 parts from float


def test_the_live_interval_is_compares_on_the_same_pairs(bundle, test_images):
    """Half the images shadowed, half computed when their label arrives: the paired figures the service
    reports equal `make compare`'s analysis on the same (int8, float, label) triples."""
    from compare import analysis, runs

    images, labels = test_images
    count = len(images)  # the fixture's test set ends with the images where int8 and float disagree
    with ServeProcess(bundle, "--shadow-rate", "0.5", "--tolerance", "100") as server:
        predictions = predict_each(server, images[:count])
        answers = []
        for prediction, label in zip(predictions, labels[:count]):
            status, answer = call_json(server, "POST", "/api/feedback", {"id": prediction["id"], "label": int(label)})
            assert status == 200, answer
            answers.append(answer)
        live = live_info(server)
        metrics = call_json_text(server, "/metrics")
    shadowed = sum(prediction["shadow"] is not None for prediction in predictions)
    assert 0 < shadowed < count  # both paths ran
    int8_labels = np.array([answer["int8_label"] for answer in answers])
    float_labels = np.array([answer["float_label"] for answer in answers])
    assert np.array_equal(int8_labels, [prediction["label"] for prediction in predictions])

    def run(model, precision, predicted):
        probabilities = np.eye(10, dtype=np.float32)[predicted]
        return runs.Run(model, "litert", precision, 1, probabilities, probabilities)

    summary = analysis.summarize([run("model_f32.tflite", "float32", float_labels),
                                  run("model_int8.tflite", "int8", int8_labels)], labels[:count], list(map(str, range(10))), 100)
    row = summary["rows"][1]
    change = live["accuracy"]["change"]
    print("live:", change, "compare:", row["change_ci_points"], row["mcnemar_p_value"])
    assert row["only_float_right"] + row["only_this_right"] > 0  # the interval is not the trivial [0, 0]
    assert change["interval_points"] == row["change_ci_points"]
    assert change["mcnemar_p"] == row["mcnemar_p_value"] and change["points"] == row["change_points"]
    assert (change["only_float_right"], change["only_int8_right"]) == (row["only_float_right"], row["only_this_right"])
    assert live["accuracy"]["int8"]["value"] == row["accuracy"]
    assert live["accuracy"]["float"]["value"] == summary["rows"][0]["accuracy"]
    assert live["feedback"]["labelled"] == count and live["accuracy"]["int8"]["trials"] == count
    low = float(re.search(r'^mnist_edge_live_change_points\{bound="low"\} (\S+)', metrics, re.MULTILINE).group(1))
    high = float(re.search(r'^mnist_edge_live_change_points\{bound="high"\} (\S+)', metrics, re.MULTILINE).group(1))
    assert [low, high] == pytest.approx(row["change_ci_points"], abs=1e-9)
    pairs = float(re.search(r"^mnist_edge_live_labelled_pairs (\S+)", metrics, re.MULTILINE).group(1))
    assert pairs == count
    # compare and serve both wrap edge_runtime/statistics.py, so agreeing with each other proves
    # little: check the live figures against the definitions too, computed here from the labels.
    expected = paired_figures_by_hand(float_labels == labels[:count], int8_labels == labels[:count])
    assert (change["only_float_right"], change["only_int8_right"]) == (expected["only_float_right"],
                                                                       expected["only_int8_right"])
    assert change["points"] == pytest.approx(expected["points"], abs=1e-12)
    assert change["mcnemar_p"] == pytest.approx(expected["mcnemar_p"], rel=1e-12)
    low_p, high_p = (expected["proportion_of"](points) for points in change["interval_points"])
    # With no image only int8 got right the lower bound is p = 0 by definition (and p = 1 above, with all of them).
    assert (low_p == pytest.approx(0.0, abs=1e-12) if expected["only_int8_right"] == 0
            else expected["upper_tail"](low_p) == pytest.approx(0.025, abs=1e-9))
    assert (high_p == pytest.approx(1.0, abs=1e-12) if expected["only_float_right"] == 0
            else expected["lower_tail"](high_p) == pytest.approx(0.025, abs=1e-9))


def paired_figures_by_hand(float_right, int8_right):
    """The paired change from its definitions, with math.comb and exact fractions (not statistics.py).

    m = n10 + n01 discordant images; the change is (n01 - n10) / N in points; McNemar's exact
    p-value is min(1, 2 P[X <= min(n01, n10)]) for X ~ Binomial(m, 1/2); the interval bounds are
    100 m (2p - 1) / N for the Clopper-Pearson p's, where P[X >= n01 | p_low] = 0.025 and
    P[X <= n01 | p_high] = 0.025 (Clopper and Pearson, Biometrika 1934).
    """
    total = len(float_right)
    only_float = int(np.sum(float_right & ~int8_right))
    only_int8 = int(np.sum(~float_right & int8_right))
    discordant = only_float + only_int8
    smaller_tail = sum(fractions.Fraction(math.comb(discordant, i), 2 ** discordant)
                       for i in range(min(only_float, only_int8) + 1))

    def pmf(i, p):
        return math.comb(discordant, i) * p ** i * (1 - p) ** (discordant - i)

    return {
        "only_float_right": only_float, "only_int8_right": only_int8,
        "points": 100 * (only_int8 - only_float) / total,
        "mcnemar_p": float(min(1, 2 * smaller_tail)),
        "proportion_of": lambda points: (points * total / (100 * discordant) + 1) / 2,
        "upper_tail": lambda p: sum(pmf(i, p) for i in range(only_int8, discordant + 1)),
        "lower_tail": lambda p: sum(pmf(i, p) for i in range(only_int8 + 1)),
    }


def call_json_text(server, path):
    import urllib.request

    with urllib.request.urlopen(f"{server.url}{path}", timeout=30) as response:
        return response.read().decode()


@pytest.fixture(scope="module")
def feedback_server(bundle):
    # Ids are forgotten by time in test_the_id_store_is_bounded_by_count_time_and_bytes, on a fake
    # clock; here the time limit is long enough that only the count can forget one, however slow the machine.
    with ServeProcess(bundle, "--shadow-rate", "0", "--tolerance", "100", "--feedback-ids", "5",
                      "--feedback-seconds", "300") as process:
        yield process
        assert "Traceback" not in process.log_text()


def one_line_error(answer):
    assert set(answer) == {"error"} and "\n" not in answer["error"]
    return answer["error"]


@pytest.mark.parametrize("label", [10, -1, "ten", 2.5, True, None, [1]])
def test_a_label_outside_the_classes_is_refused(feedback_server, test_images, label):
    (prediction,) = predict_each(feedback_server, test_images[0][:1])
    status, answer = call_json(feedback_server, "POST", "/api/feedback", {"id": prediction["id"], "label": label})
    assert status == 400 and "label must be a class index 0..9 or one of the class names" in one_line_error(answer)
    # The refused label did not use the id up.
    status, answer = call_json(feedback_server, "POST", "/api/feedback", {"id": prediction["id"], "label": "3"})
    assert status == 200 and answer["label"] == 3 and answer["float_label"] is not None


@pytest.mark.parametrize("body, content_type, status, message", [
    (b"{not json", "application/json", 400, "not valid JSON"),
    (b'{"label": 3}', "application/json", 400, "feedback must be a JSON object"),
    (b'{"id": 7, "label": 3}', "application/json", 400, "id must be the prediction's id"),
    (b"id=1&label=3", "application/x-www-form-urlencoded", 415, "feedback is JSON"),
    (b"", "application/json", 400, "empty request body"),
    (b"[" * 5000 + b"]" * 5000, "application/json", 400, "not valid JSON"),
    (b" " * 20_000, "application/json", 413, "over the 10,000-byte limit"),
])
def test_bad_feedback_bodies_get_a_4xx_with_one_line(feedback_server, body, content_type, status, message):
    got, answer = call_json(feedback_server, "POST", "/api/feedback", body=body, headers={"Content-Type": content_type})
    assert got == status and message in one_line_error(answer)


def test_unknown_second_and_forgotten_ids(feedback_server, test_images):
    status, answer = call_json(feedback_server, "POST", "/api/feedback", {"id": "f" * 32, "label": 1})
    assert status == 404 and "unknown, or forgotten (ids are kept 300 s, the last 5 predictions)" in one_line_error(answer)
    first, *rest = predict_each(feedback_server, test_images[0][:7], clients=1)
    status, answer = call_json(feedback_server, "POST", "/api/feedback", {"id": rest[-1]["id"], "label": 1})
    assert status == 200
    status, answer = call_json(feedback_server, "POST", "/api/feedback", {"id": rest[-1]["id"], "label": 2})
    assert status == 409 and "already labelled" in one_line_error(answer)
    # Seven predictions, five kept: the first is forgotten by count.
    status, answer = call_json(feedback_server, "POST", "/api/feedback", {"id": first["id"], "label": 1})
    assert status == 404 and "forgotten" in one_line_error(answer)
    assert live_info(feedback_server)["feedback"]["ids_kept"] == 5


def test_a_falling_agreement_warns_once_and_can_turn_readyz_false(bundle, test_images, disagreements):
    images, _ = test_images
    differing, agreeing = disagreements
    assert len(differing) >= 2 and len(agreeing) >= 20
    with ServeProcess(bundle, "--shadow-rate", "1", "--tolerance", "100", "--agreement-window", "20",
                      "--min-agreement", "96", "--unready-below-agreement") as server:
        predict_each(server, images[agreeing[:19]], clients=1)
        assert call_json(server, "GET", "/readyz")[0] == 200
        # The 20th image fills the window at 19 of 20 (95%, below: one warning); the 21st makes it 18 of 20.
        predict_each(server, images[differing[:2]], clients=1)
        status, answer = call_json(server, "GET", "/readyz")
        assert status == 503 and "below 96.00%" in answer["reason"]
        live = live_info(server)
        assert live["shadow"]["window"]["below"] is True and live["shadow"]["window"]["agreement"]["value"] == 0.9
        predict_each(server, images[differing[:1]], clients=1)  # still below: no second warning
        predict_each(server, images[agreeing[:20]], clients=1)  # the window is all agreement again
        assert call_json(server, "GET", "/readyz")[0] == 200
        metrics = call_json_text(server, "/metrics")
        log = server.log_text()
    warnings = [line for line in log.splitlines() if "warning: int8-float agreement" in line]
    assert warnings == ["mnist-edge serve: warning: int8-float agreement 95.00% over the last 20 shadowed images "
                        "is below 96.00%: /readyz answers 503"]
    assert sum("agreement back to 100.00%" in line for line in log.splitlines()) == 1
    assert re.search(r"^mnist_edge_shadow_window_below_threshold 0\.0$", metrics, re.MULTILINE)
    assert re.search(r"^mnist_edge_shadow_images_total 42\.0$", metrics, re.MULTILINE)


def png_of(image, size=140):
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(255 - image).resize((size, size)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.slow  # real TensorFlow training
def test_collected_samples_keep_the_newest_and_train(bundle, test_images, untrained_export, tmp_path):
    images, labels = test_images
    folder = tmp_path / "samples"
    uploads = [png_of(image) for image in images[:10]]
    with ServeProcess(bundle, "--shadow-rate", "0", "--tolerance", "100", "--collect", str(folder),
                      "--collect-max-samples", "6") as server:
        ids = []
        for upload, label in zip(uploads, labels[:10]):
            status, answer = call_json(server, "POST", "/api/predict", body=upload, headers={"Content-Type": "image/png"})
            assert status == 200
            (prediction,) = answer["predictions"]
            status, answer = call_json(server, "POST", "/api/feedback", {"id": prediction["id"], "label": int(label)})
            assert status == 200 and answer["collected"].endswith(f"-{prediction['id']}.npz")
            ids.append((prediction["id"], prediction["input"]))
        collect = live_info(server)["collect"]
    assert collect["collected"] == 10 and collect["kept"] == 6 and collect["max_samples"] == 6
    files = sorted(path.name for path in folder.iterdir())
    assert len(files) == 6 and [name.split("-")[-1][:-4] for name in files] == [sample_id for sample_id, _ in ids[4:]]
    from edge_runtime import samples

    kept = samples.read_folder(folder)[0]
    assert [sample.upload for sample in kept] == uploads[4:]  # the file as it was sent
    assert [sample.seen.tolist() for sample in kept] == [seen for _, seen in ids[4:]]  # the image the model saw
    assert [sample.label for sample in kept] == labels[4:10].tolist()
    assert all(sample.float_label >= 0 and len(sample.float_probabilities) == 10 for sample in kept)

    out = tmp_path / "collected.npz"
    result = run_cli("-m", "edge_runtime", "samples", str(folder), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert f"{folder}: 6 labelled samples" in result.stdout
    with np.load(out) as archive:
        assert archive["x_train"].dtype == np.uint8 and archive["x_train"].shape[1:] == (28, 28)
        assert len(archive["x_train"]) + len(archive["x_test"]) == 6 and len(archive["x_test"]) >= 1
        extra_training = len(archive["x_train"])

    trained = run_cli("-m", "train", "--data", str(untrained_export / "small.npz"), "--extra-data", str(out),
                      "--epochs", "1", "--output-dir", str(tmp_path / "retrained"))
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert f"Extra training data: {extra_training:,} images from {out}" in trained.stdout
    assert f"Data: {2000 + extra_training:,} training and 500 test images" in trained.stdout
    assert (tmp_path / "retrained" / "model.keras").is_file()


def big_photo(image, seed):
    """A ~1.5 MB PNG of a digit photo: noise keeps PNG from compressing it, so a write takes a while."""
    import io

    from PIL import Image

    from digit_photos import photo_of

    buffer = io.BytesIO()
    Image.fromarray(photo_of(image, np.random.default_rng(seed), scale=30, canvas=(1000, 1000), noise=0.05)).save(
        buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def test_kill_9_during_collection_leaves_a_readable_folder(bundle, test_images, tmp_path):
    images, labels = test_images
    folder = tmp_path / "samples"
    photos = [big_photo(image, seed) for seed, image in enumerate(images[:8])]
    acknowledged = []
    stop = threading.Event()

    def label_photos(server, offset):
        index = offset
        while not stop.is_set():
            try:
                status, answer = call_json(server, "POST", "/api/predict", body=photos[index % len(photos)],
                                           headers={"Content-Type": "image/png"})
                status, answer = call_json(server, "POST", "/api/feedback",
                                           {"id": answer["predictions"][0]["id"], "label": int(labels[index % 8])})
            except (OSError, ValueError):
                return  # the server is gone
            if status == 200 and answer["collected"]:
                acknowledged.append(answer["collected"])
            index += 2

    server = ServeProcess(bundle, "--shadow-rate", "0", "--self-check-images", "0", "--collect", str(folder),
                          "--collect-max-samples", "20").start()
    clients = [threading.Thread(target=label_photos, args=(server, offset)) for offset in (0, 1)]
    for client in clients:
        client.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 30 and time.monotonic() < deadline:
        time.sleep(0.01)
    # Then kill the server the moment a sample is being written: its temporary file is in the folder.
    writing = None
    while writing is None and time.monotonic() < deadline + 30:
        writing = next((entry.name for entry in os.scandir(folder) if entry.name.startswith(".sample-")), None)
    os.kill(server.pid, signal.SIGKILL)
    stop.set()
    for client in clients:
        client.join(30)
    server.process.wait(10)
    assert len(acknowledged) >= 30 and writing is not None, server.log_text()

    names = sorted(path.name for path in folder.iterdir())
    finished = [name for name in names if name.startswith("sample-")]
    leftovers = [name for name in names if not name.startswith("sample-")]
    print(f"{len(acknowledged)} acknowledged, {len(finished)} samples, killed while writing {writing}, "
          f"leftovers {leftovers}")
    assert all(name.startswith(".sample-") and name.endswith(".partial") for name in leftovers)
    # The sample being written is either left as its temporary, or was finished whole just in time.
    written_id = writing[len(".sample-"):].split(".")[0]
    assert writing in leftovers or any(name.endswith(f"-{written_id}.npz") for name in finished)
    assert 0 < len(finished) <= 20 and set(acknowledged[-5:]) <= set(finished)  # acknowledged means on disk
    result = run_cli("-m", "edge_runtime", "samples", str(folder), "--out", str(tmp_path / "after-kill.npz"))
    assert result.returncode == 0 and "skipping" not in result.stderr, result.stderr
    assert f"{len(finished)} labelled samples" in result.stdout
    # The next start clears what the killed writer left behind and keeps every whole sample.
    with ServeProcess(bundle, "--shadow-rate", "0", "--self-check-images", "0", "--collect", str(folder),
                      "--collect-max-samples", "20") as restarted:
        assert live_info(restarted)["collect"]["kept"] == len(finished)
    assert sorted(path.name for path in folder.iterdir()) == finished


class ServedWithoutReference:
    """What LiveChecks needs of a ServedModel, for a bundle with no float reference."""

    class_names = [str(digit) for digit in range(10)]
    reference = None
    reference_name = None
    top1_histogram = None  # a manifest from before label-free drift


def make_predictions(checks, count):
    import uuid

    from edge_runtime import classifier
    from edge_runtime.serve import model

    prepared = model.Prepared(model_input=np.zeros((count, 28, 28, 1), np.float32),
                              names=[f"x{index}" for index in range(count)])
    probabilities = np.eye(10, dtype=np.float32)[np.arange(count) % 10]
    answer = {"id": uuid.uuid4().hex, "predictions": [{"id": uuid.uuid4().hex, "name": name} for name in prepared.names]}
    predictions = classifier.Predictions(probabilities.argmax(axis=1), probabilities)
    checks.after_prediction(prepared, model.Outcome(predictions=predictions, seconds=0.0), answer)
    return [prediction["id"] for prediction in answer["predictions"]]


def test_the_id_store_is_bounded_by_count_time_and_bytes():
    from edge_runtime.serve import bodies, live

    now = [0.0]
    per_id = 28 * 28 * 4 + 2 * 10 * 4  # the pixels and the probabilities kept for each id
    checks = live.LiveChecks(ServedWithoutReference(), live.LiveSettings(id_count=50, id_seconds=10, id_bytes=15 * per_id),
                             log=print, clock=lambda: now[0])
    ids = make_predictions(checks, 20)
    snapshot = checks.snapshot()["feedback"]
    assert snapshot["ids_kept"] == 15 and snapshot["ids_bytes"] == 15 * per_id  # bytes: the 5 oldest went
    with pytest.raises(bodies.HTTPError, match="unknown, or forgotten") as refused:
        checks.feedback({"id": ids[4], "label": 4})
    assert refused.value.status == 404
    assert checks.feedback({"id": ids[5], "label": 5})["int8_right"] is True
    now[0] = 10.0  # exactly id_seconds old: still kept
    assert checks.feedback({"id": ids[6], "label": 6})["int8_right"] is True
    now[0] = 10.001  # just past id_seconds: everything older goes at the next look
    with pytest.raises(bodies.HTTPError, match=r"unknown, or forgotten \(ids are kept 10 s, the last 50 predictions\)"):
        checks.feedback({"id": ids[7], "label": 7})
    assert checks.snapshot()["feedback"]["ids_kept"] == 0
    later = make_predictions(checks, 1)  # made at 10.001: kept until 20.001
    now[0] = 20.0
    assert checks.feedback({"id": later[0], "label": 0})["label"] == 0
    count_bound = live.LiveChecks(ServedWithoutReference(), live.LiveSettings(id_count=3), log=print)
    make_predictions(count_bound, 10)
    assert count_bound.snapshot()["feedback"]["ids_kept"] == 3


def test_without_a_float_reference_feedback_counts_int8_alone():
    from edge_runtime.serve import live

    checks = live.LiveChecks(ServedWithoutReference(), live.LiveSettings(), log=print)
    ids = make_predictions(checks, 4)  # labels 0, 1, 2, 3
    answers = [checks.feedback({"id": prediction_id, "label": label}) for prediction_id, label in zip(ids, (0, 1, 9, 9))]
    assert [answer["float_label"] for answer in answers] == [None] * 4
    accuracy = checks.snapshot()["accuracy"]
    assert accuracy["int8"]["successes"] == 2 and accuracy["int8"]["trials"] == 4
    assert accuracy["float"]["trials"] == 0 and accuracy["change"] is None
    assert checks.snapshot()["shadow"]["rate"] == 0.0 and checks.snapshot()["shadow"]["agreement"]["trials"] == 0
