"""Valid regions for latitude/longitude pairs: containment tests and projection onto the region.

Geometry runs in plain (lon, lat) degree space, as GeoJSON does; the distortion of "nearest" near
the poles is accepted in exchange for exact agreement with the user's polygons.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import shapely
from scipy.spatial import cKDTree


class Region:
    """Where a geo point may lie. Subclasses: BoundingBox, PolygonRegion, PointSetRegion."""

    kind: str = ""

    def bounds(self) -> tuple[float, float, float, float]:
        """(min_lat, max_lat, min_lon, max_lon) of the region, used to scale coordinates."""
        raise NotImplementedError

    def contains(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        """Boolean mask of the points inside the region (boundary included)."""
        raise NotImplementedError

    def project(self, lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Move every point outside the region to the nearest valid location; inside points stay."""
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    @staticmethod
    def from_dict(data: dict[str, Any]) -> "Region":
        """Rebuild a region from its JSON form; raise ValueError on anything malformed."""
        if not isinstance(data, dict) or "type" not in data:
            raise ValueError("a geo region must be an object with a 'type' (bbox, geojson or points)")
        kind = data["type"]
        if kind == "bbox":
            return BoundingBox(
                float(data["min_lat"]), float(data["max_lat"]),
                float(data["min_lon"]), float(data["max_lon"]),
            )
        if kind == "geojson":
            return PolygonRegion(data["geometry"], tolerance=float(data.get("tolerance", 0.0)))
        if kind == "points":
            return PointSetRegion(np.asarray(data["points"], dtype=np.float64))
        raise ValueError(f"unknown geo region type {kind!r}; expected bbox, geojson or points")


@dataclass(frozen=True)
class BoundingBox(Region):
    """A latitude/longitude rectangle."""

    min_lat: float
    max_lat: float
    min_lon: float
    max_lon: float
    kind: str = field(default="bbox", init=False, repr=False)

    def __post_init__(self) -> None:
        values = (self.min_lat, self.max_lat, self.min_lon, self.max_lon)
        if not all(np.isfinite(values)):
            raise ValueError(f"bounding box corners must be finite, got {values}")
        if not (-90 <= self.min_lat <= self.max_lat <= 90):
            raise ValueError(f"bounding box latitudes must satisfy -90 <= min <= max <= 90, got {values}")
        if not (-180 <= self.min_lon <= self.max_lon <= 360):
            raise ValueError(f"bounding box longitudes must satisfy -180 <= min <= max <= 360, got {values}")

    def bounds(self) -> tuple[float, float, float, float]:
        return (self.min_lat, self.max_lat, self.min_lon, self.max_lon)

    def contains(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        return (lat >= self.min_lat) & (lat <= self.max_lat) & (lon >= self.min_lon) & (lon <= self.max_lon)

    def project(self, lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.clip(lat, self.min_lat, self.max_lat), np.clip(lon, self.min_lon, self.max_lon)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "bbox", "min_lat": self.min_lat, "max_lat": self.max_lat,
                "min_lon": self.min_lon, "max_lon": self.max_lon}


PROJECTION_INSET = 1e-9  # degrees (0.1 mm) inside its polygon that a projected point lands


class PolygonRegion(Region):
    """One or more polygons given as a GeoJSON geometry, Feature or FeatureCollection (lon, lat order).

    ``tolerance`` (degrees) accepts points that lie just outside, e.g. coastal points of a
    generalised boundary; projection lands on the polygons, ``PROJECTION_INSET`` inside them.
    """

    kind = "geojson"

    def __init__(self, geojson: dict[str, Any] | str, tolerance: float = 0.0) -> None:
        if isinstance(geojson, str):
            geojson = json.loads(geojson)
        self.geometry_json = _geometry_of(geojson)
        try:
            geometry = shapely.geometry.shape(self.geometry_json)
        except Exception as exc:  # shapely raises several types for malformed input
            raise ValueError(f"invalid GeoJSON geometry for a geo region: {exc}") from exc
        if geometry.is_empty or geometry.geom_type not in ("Polygon", "MultiPolygon"):
            raise ValueError(f"a geo region needs a Polygon or MultiPolygon, got {geometry.geom_type}")
        if not np.isfinite(tolerance) or tolerance < 0:
            raise ValueError(f"geo region tolerance must be a finite number >= 0, got {tolerance}")
        self.geometry = geometry
        self.tolerance = float(tolerance)
        shapely.prepare(self.geometry)

    def bounds(self) -> tuple[float, float, float, float]:
        min_lon, min_lat, max_lon, max_lat = self.geometry.bounds
        return (min_lat, max_lat, min_lon, max_lon)

    def contains(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        inside = shapely.contains_xy(self.geometry, lon, lat)
        if self.tolerance > 0 and not inside.all():
            outside = ~inside
            points = shapely.points(lon[outside], lat[outside])
            inside[outside] = shapely.distance(self.geometry, points) <= self.tolerance
        return inside | shapely.intersects_xy(self.geometry.boundary, lon, lat)

    def project(self, lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lat = np.array(lat, dtype=np.float64)
        lon = np.array(lon, dtype=np.float64)
        outside = np.flatnonzero(~shapely.contains_xy(self.geometry, lon, lat))
        if len(outside):
            points = shapely.points(lon[outside], lat[outside])
            nearest = shapely.get_coordinates(shapely.get_point(shapely.shortest_line(self.geometry, points), 0))
            # That boundary point, in floating point, lies on either side of the boundary (about one in six
            # fell outside by 1e-15 degrees): the nearest point of the polygons shrunk by PROJECTION_INSET
            # lies inside, unless the part it belongs to is thinner than that (then it is far off).
            if not self._shrunk.is_empty:
                inner = shapely.get_coordinates(shapely.get_point(shapely.shortest_line(self._shrunk, points), 0))
                near = np.hypot(*(inner - nearest).T) <= 100 * PROJECTION_INSET  # a sharp corner: further
                take = near & shapely.contains_xy(self.geometry, inner[:, 0], inner[:, 1])
                nearest[take] = inner[take]
            lon[outside], lat[outside] = nearest[:, 0], nearest[:, 1]
        return lat, lon

    @functools.cached_property
    def _shrunk(self) -> Any:
        """The polygons shrunk by ``PROJECTION_INSET`` (empty where they are thinner)."""
        return self.geometry.buffer(-PROJECTION_INSET)

    def to_dict(self) -> dict[str, Any]:
        return {"type": "geojson", "geometry": self.geometry_json, "tolerance": self.tolerance}

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, PolygonRegion) and self.tolerance == other.tolerance
                and self.geometry.equals(other.geometry))

    def __hash__(self) -> int:
        return hash((self.geometry.wkb, self.tolerance))

    def __repr__(self) -> str:
        return f"PolygonRegion({self.geometry.geom_type}, bounds={self.bounds()})"


class PointSetRegion(Region):
    """A finite set of allowed (lat, lon) locations, e.g. town centroids; points snap to the nearest."""

    kind = "points"

    def __init__(self, points: np.ndarray) -> None:
        points = np.asarray(points, dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
            raise ValueError("a point-set geo region needs a non-empty array of (lat, lon) pairs")
        if not np.isfinite(points).all():
            raise ValueError("a point-set geo region must not contain NaN or inf")
        self.points = points
        self._tree = cKDTree(points)

    def bounds(self) -> tuple[float, float, float, float]:
        return (self.points[:, 0].min(), self.points[:, 0].max(),
                self.points[:, 1].min(), self.points[:, 1].max())

    def contains(self, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
        distance, _ = self._tree.query(np.column_stack([lat, lon]))
        return distance <= 1e-9

    def project(self, lat: np.ndarray, lon: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        _, index = self._tree.query(np.column_stack([lat, lon]))
        return self.points[index, 0].copy(), self.points[index, 1].copy()

    def to_dict(self) -> dict[str, Any]:
        return {"type": "points", "points": self.points.tolist()}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PointSetRegion) and np.array_equal(self.points, other.points)

    def __hash__(self) -> int:
        return hash(self.points.tobytes())

    def __repr__(self) -> str:
        return f"PointSetRegion({len(self.points)} points)"


def _geometry_of(geojson: dict[str, Any]) -> dict[str, Any]:
    """The geometry object of a GeoJSON geometry, Feature or FeatureCollection (merged)."""
    if not isinstance(geojson, dict) or "type" not in geojson:
        raise ValueError("a GeoJSON region must be an object with a 'type'")
    if geojson["type"] == "Feature":
        return _geometry_of(geojson["geometry"])
    if geojson["type"] == "FeatureCollection":
        parts = [shapely.geometry.shape(_geometry_of(f)) for f in geojson.get("features", [])]
        if not parts:
            raise ValueError("a GeoJSON FeatureCollection region has no features")
        return shapely.geometry.mapping(shapely.union_all(parts))
    return geojson
