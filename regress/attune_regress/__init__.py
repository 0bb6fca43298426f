"""attune_regress: regression tracking for attune_bench results (compare, record, trend,
baseline). Python 3.11 standard library + numpy (matplotlib for `trend`)."""
__version__ = "0.1.0"
