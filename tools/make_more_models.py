"""More Keras models that kiln was not tuned for, written like the zoo by
../shared/models/make_models.py (same calibration, formats and reference outputs):
Keras applications with other layer kinds, and hand-made layer mixes.

Usage: python tools/make_more_models.py OUT [NAME...]   (the zoo's venv: tools/make-zoo.sh)
"""
import importlib.util
import os
import sys

here = os.path.dirname(os.path.abspath(__file__))
shared = os.environ.get("KILN_SHARED", os.path.join(here, "..", "..", "shared"))
spec = importlib.util.spec_from_file_location("make_models", os.path.join(shared, "models", "make_models.py"))
mm = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mm)
keras, layers = mm.keras, mm.layers


def recurrent_mix():
    inp = keras.Input((40,), dtype="int32", name="tokens")
    x = layers.Embedding(8000, 32)(inp)
    x = layers.Conv1D(32, 3, padding="same", activation="relu")(x)
    x = layers.Bidirectional(layers.GRU(24, return_sequences=True))(x)
    x = layers.TimeDistributed(layers.Dense(16, activation="tanh"))(x)
    x = layers.SimpleRNN(16)(x)
    out = layers.Dense(3, activation="softmax")(x)
    return keras.Model(inp, out, name="recurrent_mix")


def unet_mix():
    inp = keras.Input((64, 64, 3), name="image")
    a = layers.Conv2D(16, 3, padding="same", activation="elu")(inp)
    b = layers.MaxPooling2D(2)(a)
    b = layers.SeparableConv2D(32, 3, padding="same", activation="selu")(b)
    b = layers.BatchNormalization()(b)
    c = layers.Conv2DTranspose(16, 2, strides=2)(b)
    u = layers.UpSampling2D(2, interpolation="bilinear")(b)
    u = layers.Conv2D(16, 1)(u)
    x = layers.Concatenate()([a, c, u])
    x = layers.ZeroPadding2D(1)(x)
    x = layers.Cropping2D(1)(x)
    x = layers.Conv2D(8, 3, padding="same")(x)
    x = layers.LeakyReLU(0.2)(x)
    x = layers.GlobalMaxPooling2D()(x)
    out = layers.Dense(4, activation="sigmoid")(x)
    return keras.Model(inp, out, name="unet_mix")


MORE = {
    "efficientnet_b0": lambda: keras.applications.EfficientNetB0(weights=None, input_shape=(224, 224, 3)),
    "mobilenet_v3_small": lambda: keras.applications.MobileNetV3Small(weights=None, input_shape=(224, 224, 3)),
    "xception": lambda: keras.applications.Xception(weights=None, input_shape=(160, 160, 3)),
    "inception_v3": lambda: keras.applications.InceptionV3(weights=None, input_shape=(160, 160, 3)),
    "recurrent_mix": recurrent_mix,
    "unet_mix": unet_mix,
}

if __name__ == "__main__":
    mm.APPS.update(MORE)
    if len(sys.argv) == 2:
        sys.argv += list(MORE)
    mm.main()
