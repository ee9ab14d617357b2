from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class FileRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    FILE_ROLE_UNSPECIFIED: _ClassVar[FileRole]
    FILE_ROLE_PROGRAM: _ClassVar[FileRole]
    FILE_ROLE_MANIFEST: _ClassVar[FileRole]
    FILE_ROLE_SIGNATURE: _ClassVar[FileRole]
FILE_ROLE_UNSPECIFIED: FileRole
FILE_ROLE_PROGRAM: FileRole
FILE_ROLE_MANIFEST: FileRole
FILE_ROLE_SIGNATURE: FileRole

class ArtifactFile(_message.Message):
    __slots__ = ("name", "role", "size", "sha256")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: FileRole
    size: int
    sha256: str
    def __init__(self, name: _Optional[str] = ..., role: _Optional[_Union[FileRole, str]] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class ArtifactInfo(_message.Message):
    __slots__ = ("artifact_id", "model_id", "version", "method", "manifest_json", "files", "signed", "current", "compatible_model_version")
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    SIGNED_FIELD_NUMBER: _ClassVar[int]
    CURRENT_FIELD_NUMBER: _ClassVar[int]
    COMPATIBLE_MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    artifact_id: str
    model_id: str
    version: str
    method: str
    manifest_json: str
    files: _containers.RepeatedCompositeFieldContainer[ArtifactFile]
    signed: bool
    current: bool
    compatible_model_version: str
    def __init__(self, artifact_id: _Optional[str] = ..., model_id: _Optional[str] = ..., version: _Optional[str] = ..., method: _Optional[str] = ..., manifest_json: _Optional[str] = ..., files: _Optional[_Iterable[_Union[ArtifactFile, _Mapping]]] = ..., signed: _Optional[bool] = ..., current: _Optional[bool] = ..., compatible_model_version: _Optional[str] = ...) -> None: ...

class ArtifactRef(_message.Message):
    __slots__ = ("artifact_id", "version")
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    artifact_id: str
    version: str
    def __init__(self, artifact_id: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class ListArtifactsRequest(_message.Message):
    __slots__ = ("model_id",)
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    def __init__(self, model_id: _Optional[str] = ...) -> None: ...

class ListArtifactsResponse(_message.Message):
    __slots__ = ("artifacts", "generation")
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    artifacts: _containers.RepeatedCompositeFieldContainer[ArtifactInfo]
    generation: int
    def __init__(self, artifacts: _Optional[_Iterable[_Union[ArtifactInfo, _Mapping]]] = ..., generation: _Optional[int] = ...) -> None: ...

class GetArtifactRequest(_message.Message):
    __slots__ = ("artifact_id", "chunk_size", "version")
    ARTIFACT_ID_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    artifact_id: str
    chunk_size: int
    version: str
    def __init__(self, artifact_id: _Optional[str] = ..., chunk_size: _Optional[int] = ..., version: _Optional[str] = ...) -> None: ...

class FileChunk(_message.Message):
    __slots__ = ("name", "role", "offset", "data", "last")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    name: str
    role: FileRole
    offset: int
    data: bytes
    last: bool
    def __init__(self, name: _Optional[str] = ..., role: _Optional[_Union[FileRole, str]] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ..., last: _Optional[bool] = ...) -> None: ...

class ArtifactChunk(_message.Message):
    __slots__ = ("info", "chunk")
    INFO_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    info: ArtifactInfo
    chunk: FileChunk
    def __init__(self, info: _Optional[_Union[ArtifactInfo, _Mapping]] = ..., chunk: _Optional[_Union[FileChunk, _Mapping]] = ...) -> None: ...

class GetKeySetRequest(_message.Message):
    __slots__ = ("since_sequence",)
    SINCE_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    since_sequence: int
    def __init__(self, since_sequence: _Optional[int] = ...) -> None: ...

class KeyStatement(_message.Message):
    __slots__ = ("sequence", "keys_json", "signature")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    KEYS_JSON_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    keys_json: bytes
    signature: bytes
    def __init__(self, sequence: _Optional[int] = ..., keys_json: _Optional[bytes] = ..., signature: _Optional[bytes] = ...) -> None: ...

class GetKeySetResponse(_message.Message):
    __slots__ = ("statements",)
    STATEMENTS_FIELD_NUMBER: _ClassVar[int]
    statements: _containers.RepeatedCompositeFieldContainer[KeyStatement]
    def __init__(self, statements: _Optional[_Iterable[_Union[KeyStatement, _Mapping]]] = ...) -> None: ...
