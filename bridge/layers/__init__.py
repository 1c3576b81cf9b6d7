"""Layer translators, one per MATLAB layer class, looked up by class name (``class(layer)``)."""

from __future__ import annotations

from hessian_core.errors import InvalidInputError

from ..spec import LayerSpec
from .activations import ELU, GELU, LeakyReLU, ReLU, Sigmoid, Softmax, Swish, Tanh
from .base import Act, Translator
from .combine import Addition, Concatenation, DepthConcatenation, Dropout, Flatten
from .conv import AveragePooling2D, Convolution2D, GlobalAveragePooling2D, GlobalMaxPooling2D, MaxPooling2D
from .fully_connected import FullyConnected
from .inputs import FeatureInput, Image3DInput, ImageInput, InputTranslator, SequenceInput
from .normalization import BatchNormalization, LayerNormalization
from .recurrent import GRU, LSTM

#: MATLAB class (last component of ``class(layer)``, e.g. nnet.cnn.layer.ReLULayer) -> translator
REGISTRY: dict[str, type[Translator]] = {
    "FeatureInputLayer": FeatureInput,
    "ImageInputLayer": ImageInput,
    "Image3DInputLayer": Image3DInput,
    "SequenceInputLayer": SequenceInput,
    "FullyConnectedLayer": FullyConnected,
    "Convolution2DLayer": Convolution2D,
    "BatchNormalizationLayer": BatchNormalization,
    "LayerNormalizationLayer": LayerNormalization,
    "ReLULayer": ReLU,
    "LeakyReLULayer": LeakyReLU,
    "ELULayer": ELU,
    "GELULayer": GELU,
    "SigmoidLayer": Sigmoid,
    "TanhLayer": Tanh,
    "SwishLayer": Swish,
    "SoftmaxLayer": Softmax,
    "DropoutLayer": Dropout,
    "FlattenLayer": Flatten,
    "MaxPooling2DLayer": MaxPooling2D,
    "AveragePooling2DLayer": AveragePooling2D,
    "GlobalAveragePooling2DLayer": GlobalAveragePooling2D,
    "GlobalMaxPooling2DLayer": GlobalMaxPooling2D,
    "AdditionLayer": Addition,
    "ConcatenationLayer": Concatenation,
    "DepthConcatenationLayer": DepthConcatenation,
    "LSTMLayer": LSTM,
    "GRULayer": GRU,
}


def translator_for(layer: LayerSpec) -> type[Translator]:
    cls = REGISTRY.get(layer.short_class)
    if cls is None:
        raise InvalidInputError(
            f"layer '{layer.name}' has class {layer.cls}, which the bridge does not support; supported: "
            + ", ".join(sorted(REGISTRY))
        )
    return cls


__all__ = ["REGISTRY", "translator_for", "Act", "Translator", "InputTranslator"]
