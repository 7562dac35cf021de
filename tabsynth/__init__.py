"""tabsynth: differentially private synthetic tables from a DP-GAN, with honest privacy accounting."""

from tabsynth.encoding import DomainError, Encoder, Span
from tabsynth.geo import BoundingBox, PointSetRegion, PolygonRegion, Region
from tabsynth.rules import Condition, Rule, RuleError, RulesUnmetError
from tabsynth.synthesizer import ModelFileError, Synthesizer, TrainingDivergedError
from tabsynth.schema import (
    BooleanColumn,
    CategoricalColumn,
    Column,
    ContinuousColumn,
    DatetimeColumn,
    DurationColumn,
    GeoPointColumn,
    IntegerColumn,
    Schema,
    SchemaError,
)

__version__ = "0.1.0"

__all__ = [
    "BooleanColumn", "BoundingBox", "CategoricalColumn", "Column", "Condition", "ContinuousColumn",
    "DatetimeColumn", "DomainError", "DurationColumn", "Encoder", "GeoPointColumn", "IntegerColumn", "PointSetRegion",
    "PolygonRegion", "ModelFileError", "Region", "Rule", "RuleError", "RulesUnmetError", "Schema", "SchemaError", "Span",
    "Synthesizer", "TrainingDivergedError",
]
