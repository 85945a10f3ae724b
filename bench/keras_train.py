"""The peer for `pipeline bench-train`: TF-Keras (tensorflow-cpu) training and inference
images/s of the same SmallCnn (or MobileNetV2) on the same synthetic batch, Adam, the same
batch size.

usage: keras_train.py [--model small_cnn|mobilenet_v2] --input 28,28,1 --conv-filters 32,64
                      --dense-units 64 --classes 10 --batch 64 --steps 30 --warmup 3
Prints one JSON object.
"""
import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402


def mobilenet_v2(input_shape, classes):
    """Keras' MobileNetV2 (width 1.0, untrained): the same network as kiln's `mobilenet_v2`."""
    net = tf.keras.applications.MobileNetV2(
        input_shape=input_shape, alpha=1.0, weights=None, classes=classes,
        classifier_activation=None)
    net.compile(
        optimizer=tf.keras.optimizers.Adam(1e-3),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return net


def model(input_shape, conv_filters, dense_units, classes):
    layers = [tf.keras.Input(shape=input_shape)]
    for filters in conv_filters:
        layers += [tf.keras.layers.Conv2D(filters, 3, activation="relu"), tf.keras.layers.MaxPooling2D(2)]
    layers += [
        tf.keras.layers.Flatten(),
        tf.keras.layers.Dense(dense_units, activation="relu"),
        tf.keras.layers.Dense(classes),
    ]
    net = tf.keras.Sequential(layers)
    net.compile(
        optimizer=tf.keras.optimizers.Adam(1e-3),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return net


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="small_cnn", choices=["small_cnn", "mobilenet_v2"])
    p.add_argument("--input", default="28,28,1")
    p.add_argument("--conv-filters", default="32,64")
    p.add_argument("--dense-units", type=int, default=64)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    a = p.parse_args()
    h, w, c = (int(v) for v in a.input.split(","))
    filters = [int(v) for v in a.conv_filters.split(",")]
    rng = np.random.default_rng(7)
    x = tf.constant(rng.random((a.batch, h, w, c), dtype=np.float32))
    y = tf.constant(rng.integers(0, a.classes, a.batch))
    if a.model == "mobilenet_v2":
        net = mobilenet_v2((h, w, c), a.classes)
    else:
        net = model((h, w, c), filters, a.dense_units, a.classes)

    for _ in range(a.warmup):
        net.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(a.steps):
        net.train_on_batch(x, y)  # returns the loss: the step has finished
    train_s = time.perf_counter() - start

    infer = tf.function(lambda t: net(t, training=False))
    for _ in range(a.warmup):
        infer(x).numpy()
    start = time.perf_counter()
    for _ in range(a.steps):
        infer(x).numpy()
    infer_s = time.perf_counter() - start

    images = a.steps * a.batch
    print(json.dumps({
        "tensorflow": tf.__version__,
        "train_images_per_second": images / train_s,
        "infer_images_per_second": images / infer_s,
        "threads": {"intra": tf.config.threading.get_intra_op_parallelism_threads(),
                    "inter": tf.config.threading.get_inter_op_parallelism_threads()},
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
