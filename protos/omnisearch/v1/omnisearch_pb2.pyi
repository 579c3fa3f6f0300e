from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Vector(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class Filters(_message.Message):
    __slots__ = ("kinds", "languages")
    KINDS_FIELD_NUMBER: _ClassVar[int]
    LANGUAGES_FIELD_NUMBER: _ClassVar[int]
    kinds: _containers.RepeatedScalarFieldContainer[str]
    languages: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, kinds: _Optional[_Iterable[str]] = ..., languages: _Optional[_Iterable[str]] = ...) -> None: ...

class SearchParams(_message.Message):
    __slots__ = ("ef", "nprobe")
    EF_FIELD_NUMBER: _ClassVar[int]
    NPROBE_FIELD_NUMBER: _ClassVar[int]
    ef: int
    nprobe: int
    def __init__(self, ef: _Optional[int] = ..., nprobe: _Optional[int] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("text", "vector", "index", "k", "filters", "params", "include_fields")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    FILTERS_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_FIELDS_FIELD_NUMBER: _ClassVar[int]
    text: str
    vector: Vector
    index: str
    k: int
    filters: Filters
    params: SearchParams
    include_fields: bool
    def __init__(self, text: _Optional[str] = ..., vector: _Optional[_Union[Vector, _Mapping]] = ..., index: _Optional[str] = ..., k: _Optional[int] = ..., filters: _Optional[_Union[Filters, _Mapping]] = ..., params: _Optional[_Union[SearchParams, _Mapping]] = ..., include_fields: _Optional[bool] = ...) -> None: ...

class Hit(_message.Message):
    __slots__ = ("id", "score", "kind", "fields")
    class FieldsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    id: str
    score: float
    kind: str
    fields: _containers.ScalarMap[str, str]
    def __init__(self, id: _Optional[str] = ..., score: _Optional[float] = ..., kind: _Optional[str] = ..., fields: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Timings(_message.Message):
    __slots__ = ("embed_ms", "search_ms", "hydrate_ms", "total_ms", "cache_hit", "batch_size")
    EMBED_MS_FIELD_NUMBER: _ClassVar[int]
    SEARCH_MS_FIELD_NUMBER: _ClassVar[int]
    HYDRATE_MS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_MS_FIELD_NUMBER: _ClassVar[int]
    CACHE_HIT_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    embed_ms: float
    search_ms: float
    hydrate_ms: float
    total_ms: float
    cache_hit: bool
    batch_size: int
    def __init__(self, embed_ms: _Optional[float] = ..., search_ms: _Optional[float] = ..., hydrate_ms: _Optional[float] = ..., total_ms: _Optional[float] = ..., cache_hit: _Optional[bool] = ..., batch_size: _Optional[int] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("hits", "generation", "checkpoint_id", "timings", "index")
    HITS_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[Hit]
    generation: int
    checkpoint_id: str
    timings: Timings
    index: str
    def __init__(self, hits: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ..., generation: _Optional[int] = ..., checkpoint_id: _Optional[str] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ..., index: _Optional[str] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("texts", "space")
    TEXTS_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    texts: _containers.RepeatedScalarFieldContainer[str]
    space: str
    def __init__(self, texts: _Optional[_Iterable[str]] = ..., space: _Optional[str] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("vectors", "dim", "generation", "checkpoint_id", "timings")
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    TIMINGS_FIELD_NUMBER: _ClassVar[int]
    vectors: _containers.RepeatedCompositeFieldContainer[Vector]
    dim: int
    generation: int
    checkpoint_id: str
    timings: Timings
    def __init__(self, vectors: _Optional[_Iterable[_Union[Vector, _Mapping]]] = ..., dim: _Optional[int] = ..., generation: _Optional[int] = ..., checkpoint_id: _Optional[str] = ..., timings: _Optional[_Union[Timings, _Mapping]] = ...) -> None: ...

class StatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class IndexStatus(_message.Message):
    __slots__ = ("name", "space", "entity_kind", "dim", "metric", "backend", "count", "shards", "memory_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SPACE_FIELD_NUMBER: _ClassVar[int]
    ENTITY_KIND_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    space: str
    entity_kind: str
    dim: int
    metric: str
    backend: str
    count: int
    shards: int
    memory_bytes: int
    def __init__(self, name: _Optional[str] = ..., space: _Optional[str] = ..., entity_kind: _Optional[str] = ..., dim: _Optional[int] = ..., metric: _Optional[str] = ..., backend: _Optional[str] = ..., count: _Optional[int] = ..., shards: _Optional[int] = ..., memory_bytes: _Optional[int] = ...) -> None: ...

class CacheStats(_message.Message):
    __slots__ = ("size", "capacity", "ttl_s", "hits", "misses", "expired", "hit_rate")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    MISSES_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_FIELD_NUMBER: _ClassVar[int]
    HIT_RATE_FIELD_NUMBER: _ClassVar[int]
    size: int
    capacity: int
    ttl_s: float
    hits: int
    misses: int
    expired: int
    hit_rate: float
    def __init__(self, size: _Optional[int] = ..., capacity: _Optional[int] = ..., ttl_s: _Optional[float] = ..., hits: _Optional[int] = ..., misses: _Optional[int] = ..., expired: _Optional[int] = ..., hit_rate: _Optional[float] = ...) -> None: ...

class BatcherStats(_message.Message):
    __slots__ = ("batches", "items", "mean_batch_size", "max_batch_size_seen", "queue_depth", "rejected", "expired", "max_batch", "max_wait_ms")
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MEAN_BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_SIZE_SEEN_FIELD_NUMBER: _ClassVar[int]
    QUEUE_DEPTH_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    MAX_WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    batches: int
    items: int
    mean_batch_size: float
    max_batch_size_seen: int
    queue_depth: int
    rejected: int
    expired: int
    max_batch: int
    max_wait_ms: float
    def __init__(self, batches: _Optional[int] = ..., items: _Optional[int] = ..., mean_batch_size: _Optional[float] = ..., max_batch_size_seen: _Optional[int] = ..., queue_depth: _Optional[int] = ..., rejected: _Optional[int] = ..., expired: _Optional[int] = ..., max_batch: _Optional[int] = ..., max_wait_ms: _Optional[float] = ...) -> None: ...

class StatusResponse(_message.Message):
    __slots__ = ("serving", "generation", "checkpoint_id", "checkpoint", "indices", "loaded_at", "manifest_generation", "last_error", "last_failed_generation", "last_error_at", "in_flight", "draining", "swaps", "cache", "batcher", "uptime_s", "rss_bytes")
    SERVING_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    INDICES_FIELD_NUMBER: _ClassVar[int]
    LOADED_AT_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_GENERATION_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    LAST_FAILED_GENERATION_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_AT_FIELD_NUMBER: _ClassVar[int]
    IN_FLIGHT_FIELD_NUMBER: _ClassVar[int]
    DRAINING_FIELD_NUMBER: _ClassVar[int]
    SWAPS_FIELD_NUMBER: _ClassVar[int]
    CACHE_FIELD_NUMBER: _ClassVar[int]
    BATCHER_FIELD_NUMBER: _ClassVar[int]
    UPTIME_S_FIELD_NUMBER: _ClassVar[int]
    RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    serving: bool
    generation: int
    checkpoint_id: str
    checkpoint: str
    indices: _containers.RepeatedCompositeFieldContainer[IndexStatus]
    loaded_at: str
    manifest_generation: int
    last_error: str
    last_failed_generation: int
    last_error_at: str
    in_flight: int
    draining: int
    swaps: int
    cache: CacheStats
    batcher: BatcherStats
    uptime_s: float
    rss_bytes: int
    def __init__(self, serving: _Optional[bool] = ..., generation: _Optional[int] = ..., checkpoint_id: _Optional[str] = ..., checkpoint: _Optional[str] = ..., indices: _Optional[_Iterable[_Union[IndexStatus, _Mapping]]] = ..., loaded_at: _Optional[str] = ..., manifest_generation: _Optional[int] = ..., last_error: _Optional[str] = ..., last_failed_generation: _Optional[int] = ..., last_error_at: _Optional[str] = ..., in_flight: _Optional[int] = ..., draining: _Optional[int] = ..., swaps: _Optional[int] = ..., cache: _Optional[_Union[CacheStats, _Mapping]] = ..., batcher: _Optional[_Union[BatcherStats, _Mapping]] = ..., uptime_s: _Optional[float] = ..., rss_bytes: _Optional[int] = ...) -> None: ...

class ReloadRequest(_message.Message):
    __slots__ = ("force",)
    FORCE_FIELD_NUMBER: _ClassVar[int]
    force: bool
    def __init__(self, force: _Optional[bool] = ...) -> None: ...

class ReloadResponse(_message.Message):
    __slots__ = ("changed", "generation", "message")
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    changed: bool
    generation: int
    message: str
    def __init__(self, changed: _Optional[bool] = ..., generation: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class ListGenerationsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GenerationInfo(_message.Message):
    __slots__ = ("id", "state", "created_at", "published_at", "checkpoint", "checkpoint_id", "message", "indices")
    ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_AT_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    INDICES_FIELD_NUMBER: _ClassVar[int]
    id: int
    state: str
    created_at: str
    published_at: str
    checkpoint: str
    checkpoint_id: str
    message: str
    indices: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, id: _Optional[int] = ..., state: _Optional[str] = ..., created_at: _Optional[str] = ..., published_at: _Optional[str] = ..., checkpoint: _Optional[str] = ..., checkpoint_id: _Optional[str] = ..., message: _Optional[str] = ..., indices: _Optional[_Iterable[str]] = ...) -> None: ...

class ListGenerationsResponse(_message.Message):
    __slots__ = ("generations", "serving_generation")
    GENERATIONS_FIELD_NUMBER: _ClassVar[int]
    SERVING_GENERATION_FIELD_NUMBER: _ClassVar[int]
    generations: _containers.RepeatedCompositeFieldContainer[GenerationInfo]
    serving_generation: int
    def __init__(self, generations: _Optional[_Iterable[_Union[GenerationInfo, _Mapping]]] = ..., serving_generation: _Optional[int] = ...) -> None: ...

class RollbackRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class RollbackResponse(_message.Message):
    __slots__ = ("changed", "generation", "message")
    CHANGED_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    changed: bool
    generation: int
    message: str
    def __init__(self, changed: _Optional[bool] = ..., generation: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...
