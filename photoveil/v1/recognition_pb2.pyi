from photoveil.v1 import artifacts_pb2 as _artifacts_pb2
from photoveil.v1 import tensor_pb2 as _tensor_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODEL_KIND_UNSPECIFIED: _ClassVar[ModelKind]
    MODEL_KIND_CLASSIFICATION: _ClassVar[ModelKind]
    MODEL_KIND_EMBEDDING: _ClassVar[ModelKind]
MODEL_KIND_UNSPECIFIED: ModelKind
MODEL_KIND_CLASSIFICATION: ModelKind
MODEL_KIND_EMBEDDING: ModelKind

class ModelInfo(_message.Message):
    __slots__ = ("model_id", "version", "kind", "input_height", "input_width", "split_points", "labels", "verify_threshold")
    class SplitPointsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: Shape
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[Shape, _Mapping]] = ...) -> None: ...
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    INPUT_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    INPUT_WIDTH_FIELD_NUMBER: _ClassVar[int]
    SPLIT_POINTS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    VERIFY_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    version: str
    kind: ModelKind
    input_height: int
    input_width: int
    split_points: _containers.MessageMap[str, Shape]
    labels: _containers.RepeatedScalarFieldContainer[str]
    verify_threshold: float
    def __init__(self, model_id: _Optional[str] = ..., version: _Optional[str] = ..., kind: _Optional[_Union[ModelKind, str]] = ..., input_height: _Optional[int] = ..., input_width: _Optional[int] = ..., split_points: _Optional[_Mapping[str, Shape]] = ..., labels: _Optional[_Iterable[str]] = ..., verify_threshold: _Optional[float] = ...) -> None: ...

class Shape(_message.Message):
    __slots__ = ("dims",)
    DIMS_FIELD_NUMBER: _ClassVar[int]
    dims: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, dims: _Optional[_Iterable[int]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class RecognizeRequest(_message.Message):
    __slots__ = ("model_id", "input", "top_k", "request_id", "return_output", "artifact")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RETURN_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    input: _tensor_pb2.Input
    top_k: int
    request_id: str
    return_output: bool
    artifact: _artifacts_pb2.ArtifactRef
    def __init__(self, model_id: _Optional[str] = ..., input: _Optional[_Union[_tensor_pb2.Input, _Mapping]] = ..., top_k: _Optional[int] = ..., request_id: _Optional[str] = ..., return_output: _Optional[bool] = ..., artifact: _Optional[_Union[_artifacts_pb2.ArtifactRef, _Mapping]] = ...) -> None: ...

class RecognizeFeaturesRequest(_message.Message):
    __slots__ = ("model_id", "split_point", "features", "top_k", "request_id", "return_output", "artifact")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    SPLIT_POINT_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RETURN_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    split_point: str
    features: _tensor_pb2.Tensor
    top_k: int
    request_id: str
    return_output: bool
    artifact: _artifacts_pb2.ArtifactRef
    def __init__(self, model_id: _Optional[str] = ..., split_point: _Optional[str] = ..., features: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ..., top_k: _Optional[int] = ..., request_id: _Optional[str] = ..., return_output: _Optional[bool] = ..., artifact: _Optional[_Union[_artifacts_pb2.ArtifactRef, _Mapping]] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("label", "score", "index")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    label: str
    score: float
    index: int
    def __init__(self, label: _Optional[str] = ..., score: _Optional[float] = ..., index: _Optional[int] = ...) -> None: ...

class Result(_message.Message):
    __slots__ = ("candidates", "output")
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    candidates: _containers.RepeatedCompositeFieldContainer[Candidate]
    output: _tensor_pb2.Tensor
    def __init__(self, candidates: _Optional[_Iterable[_Union[Candidate, _Mapping]]] = ..., output: _Optional[_Union[_tensor_pb2.Tensor, _Mapping]] = ...) -> None: ...

class RecognizeResponse(_message.Message):
    __slots__ = ("model_id", "model_version", "request_id", "results", "error")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    model_version: str
    request_id: str
    results: _containers.RepeatedCompositeFieldContainer[Result]
    error: _tensor_pb2.ItemError
    def __init__(self, model_id: _Optional[str] = ..., model_version: _Optional[str] = ..., request_id: _Optional[str] = ..., results: _Optional[_Iterable[_Union[Result, _Mapping]]] = ..., error: _Optional[_Union[_tensor_pb2.ItemError, _Mapping]] = ...) -> None: ...

class EnrollRequest(_message.Message):
    __slots__ = ("model_id", "identity", "input", "artifact")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    identity: str
    input: _tensor_pb2.Input
    artifact: _artifacts_pb2.ArtifactRef
    def __init__(self, model_id: _Optional[str] = ..., identity: _Optional[str] = ..., input: _Optional[_Union[_tensor_pb2.Input, _Mapping]] = ..., artifact: _Optional[_Union[_artifacts_pb2.ArtifactRef, _Mapping]] = ...) -> None: ...

class EnrollResponse(_message.Message):
    __slots__ = ("model_id", "model_version", "identity", "record_ids", "total_for_identity")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    RECORD_IDS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FOR_IDENTITY_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    model_version: str
    identity: str
    record_ids: _containers.RepeatedScalarFieldContainer[int]
    total_for_identity: int
    def __init__(self, model_id: _Optional[str] = ..., model_version: _Optional[str] = ..., identity: _Optional[str] = ..., record_ids: _Optional[_Iterable[int]] = ..., total_for_identity: _Optional[int] = ...) -> None: ...

class VerifyRequest(_message.Message):
    __slots__ = ("model_id", "identity", "input", "threshold", "artifact")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    identity: str
    input: _tensor_pb2.Input
    threshold: float
    artifact: _artifacts_pb2.ArtifactRef
    def __init__(self, model_id: _Optional[str] = ..., identity: _Optional[str] = ..., input: _Optional[_Union[_tensor_pb2.Input, _Mapping]] = ..., threshold: _Optional[float] = ..., artifact: _Optional[_Union[_artifacts_pb2.ArtifactRef, _Mapping]] = ...) -> None: ...

class VerifyResponse(_message.Message):
    __slots__ = ("model_id", "model_version", "verdicts")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    VERDICTS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    model_version: str
    verdicts: _containers.RepeatedCompositeFieldContainer[Verdict]
    def __init__(self, model_id: _Optional[str] = ..., model_version: _Optional[str] = ..., verdicts: _Optional[_Iterable[_Union[Verdict, _Mapping]]] = ...) -> None: ...

class Verdict(_message.Message):
    __slots__ = ("match", "score", "threshold")
    MATCH_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    match: bool
    score: float
    threshold: float
    def __init__(self, match: _Optional[bool] = ..., score: _Optional[float] = ..., threshold: _Optional[float] = ...) -> None: ...

class IdentifyRequest(_message.Message):
    __slots__ = ("model_id", "input", "top_k", "artifact")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    input: _tensor_pb2.Input
    top_k: int
    artifact: _artifacts_pb2.ArtifactRef
    def __init__(self, model_id: _Optional[str] = ..., input: _Optional[_Union[_tensor_pb2.Input, _Mapping]] = ..., top_k: _Optional[int] = ..., artifact: _Optional[_Union[_artifacts_pb2.ArtifactRef, _Mapping]] = ...) -> None: ...

class IdentifyResponse(_message.Message):
    __slots__ = ("model_id", "model_version", "results")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    model_version: str
    results: _containers.RepeatedCompositeFieldContainer[Result]
    def __init__(self, model_id: _Optional[str] = ..., model_version: _Optional[str] = ..., results: _Optional[_Iterable[_Union[Result, _Mapping]]] = ...) -> None: ...

class DeleteIdentityRequest(_message.Message):
    __slots__ = ("model_id", "identity")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    identity: str
    def __init__(self, model_id: _Optional[str] = ..., identity: _Optional[str] = ...) -> None: ...

class DeleteIdentityResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...
