"""Kibana 9 saved-object formats: data views, saved searches, Lens visualizations, dashboards. Pure.

`catalog.py` says *what* the auditors see in a few readable lines per chart; this
module says *how Kibana stores it*, so the format details live in one place:

- a data view (`index-pattern`) has a title (the index pattern), a display name, a
  time field and optional runtime fields (JSON strings inside the attributes);
- a Lens visualization (`lens`) keeps one form-based layer of columns (buckets first,
  then metrics) and a visualization state naming those columns; the layer points at
  its data view through the reference `indexpattern-datasource-layer-<layer id>`;
- a dashboard keeps its panels as a JSON string; a panel stored by reference carries
  `panelRefName: panel_<panel index>` and the dashboard a reference named
  `<panel index>:panel_<panel index>` (what Kibana's own extract step writes).

Kibana cannot run on the development machines: `tests/unit/test_kibana_objects.py`
checks these shapes and every field against our index templates instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

LAYER = "layer1"  # one layer per visualization: its id only has to be unique inside it
RECORDS = "___records___"  # Lens's source field for a document count
LENS_VERSION = {"coreMigrationVersion": "8.8.0", "typeMigrationVersion": "8.9.0"}  # lens's last migration
VIEW_VERSION = {"coreMigrationVersion": "8.8.0", "typeMigrationVersion": "8.0.0"}
SEARCH_VERSION = {"coreMigrationVersion": "8.8.0", "typeMigrationVersion": "10.2.0"}
DASHBOARD_VERSION = {"coreMigrationVersion": "8.8.0", "typeMigrationVersion": "10.2.0"}
GRID_COLUMNS = 48  # a dashboard row is 48 units wide

DataType = Literal["string", "number", "date", "ip"]
Shape = Literal["bar", "line", "area", "bar_horizontal", "metric", "table", "donut"]


def _json(value: Any) -> str:
    """Kibana keeps some attributes as JSON text; sorted keys keep the export byte-stable."""
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


# --- data views and saved searches -------------------------------------------------------------

@dataclass(frozen=True)
class RuntimeField:
    """A data view runtime field (Painless, run by Elasticsearch when a chart asks for it)."""

    name: str
    type: Literal["double", "long", "keyword"]
    script: str
    reads: tuple[str, ...]  # the template fields the script reads: the structural test checks them


@dataclass(frozen=True)
class DataView:
    id: str
    title: str  # the index pattern
    name: str
    time_field: str | None  # None: the time picker does not filter it
    template: str  # which store/templates/*.json maps these indices
    runtime: tuple[RuntimeField, ...] = ()

    def saved_object(self) -> dict[str, Any]:
        attributes: dict[str, Any] = {"title": self.title, "name": self.name, "allowNoIndex": True}
        if self.time_field:
            attributes["timeFieldName"] = self.time_field
        if self.runtime:
            attributes["runtimeFieldMap"] = _json({r.name: {"type": r.type, "script": {"source": r.script}}
                                                   for r in self.runtime})
        return {"type": "index-pattern", "id": self.id, "attributes": attributes, "references": [],
                "managed": False, **VIEW_VERSION}


@dataclass(frozen=True)
class SavedSearch:
    id: str
    title: str
    view: DataView
    columns: tuple[str, ...]
    sort: tuple[str, Literal["asc", "desc"]]
    query: str = ""  # KQL

    def saved_object(self) -> dict[str, Any]:
        source = {"query": {"query": self.query, "language": "kuery"}, "filter": [],
                  "indexRefName": "kibanaSavedObjectMeta.searchSourceJSON.index"}
        return {"type": "search", "id": self.id,
                "attributes": {"title": self.title, "description": "", "columns": list(self.columns),
                               "sort": [list(self.sort)], "kibanaSavedObjectMeta": {"searchSourceJSON": _json(source)}},
                "references": [{"name": "kibanaSavedObjectMeta.searchSourceJSON.index", "type": "index-pattern",
                                "id": self.view.id}],
                "managed": False, **SEARCH_VERSION}


# --- Lens columns ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Column:
    """One column of a Lens form-based layer. `field` is None for a count of documents."""

    operation: str  # date_histogram, terms, count, average, max, min, sum, unique_count
    field: str | None
    label: str
    data_type: DataType = "number"
    size: int = 10  # terms: how many values
    interval: str = "auto"  # date_histogram
    kql: str = ""  # a metric's own filter (e.g. only open incidents)

    @property
    def bucketed(self) -> bool:
        return self.operation in ("date_histogram", "terms")

    def spec(self, order_by: str | None) -> dict[str, Any]:
        column: dict[str, Any] = {"label": self.label, "customLabel": True, "dataType": self.data_type,
                                  "operationType": self.operation, "sourceField": self.field or RECORDS,
                                  "isBucketed": self.bucketed}
        if self.operation == "date_histogram":
            column.update(dataType="date", scale="interval",
                          params={"interval": self.interval, "includeEmptyRows": True, "dropPartials": False})
        elif self.operation == "terms":
            params: dict[str, Any] = {"size": self.size, "orderDirection": "desc", "otherBucket": True,
                                      "missingBucket": False, "parentFormat": {"id": "terms"}}
            params["orderBy"] = {"type": "column", "columnId": order_by} if order_by else {"type": "alphabetical"}
            column.update(scale="ordinal", params=params)
        else:
            column.update(scale="ratio", params={"emptyAsNull": True})
        if self.kql:
            column["filter"] = {"query": self.kql, "language": "kuery"}
        return column


def date_histogram(field: str, interval: str = "auto", label: str = "") -> Column:
    return Column("date_histogram", field, label or field, "date", interval=interval)


def terms(field: str, label: str, size: int = 10, data_type: DataType = "string") -> Column:
    return Column("terms", field, label, data_type, size=size)


def count(label: str, kql: str = "") -> Column:
    return Column("count", None, label, kql=kql)


def metric(operation: Literal["average", "max", "min", "sum", "unique_count"], field: str, label: str,
           data_type: DataType = "number", kql: str = "") -> Column:
    return Column(operation, field, label, data_type, kql=kql)


# --- Lens visualizations -----------------------------------------------------------------------

@dataclass(frozen=True)
class Lens:
    """A chart: `buckets` split the data (x axis, then a breakdown), `metrics` measure it."""

    id: str
    title: str
    view: DataView
    shape: Shape
    buckets: tuple[Column, ...] = ()
    metrics: tuple[Column, ...] = ()
    query: str = ""  # KQL over the whole chart
    description: str = ""

    def columns(self) -> dict[str, Column]:
        """Stable column ids: b0, b1, ... for buckets and m0, m1, ... for metrics."""
        return {**{f"b{i}": c for i, c in enumerate(self.buckets)}, **{f"m{i}": c for i, c in enumerate(self.metrics)}}

    def visualization_type(self) -> str:
        return {"metric": "lnsMetric", "table": "lnsDatatable", "donut": "lnsPie"}.get(self.shape, "lnsXY")

    def _visualization(self) -> dict[str, Any]:
        buckets = [f"b{i}" for i in range(len(self.buckets))]
        metrics = [f"m{i}" for i in range(len(self.metrics))]
        if self.shape == "metric":
            return {"layerId": LAYER, "layerType": "data", "metricAccessor": metrics[0]}
        if self.shape == "table":
            return {"layerId": LAYER, "layerType": "data", "columns": [{"columnId": c} for c in buckets + metrics]}
        if self.shape == "donut":
            return {"shape": "donut", "layers": [{
                "layerId": LAYER, "layerType": "data", "primaryGroups": buckets, "metrics": metrics,
                "numberDisplay": "percent", "categoryDisplay": "default", "legendDisplay": "default",
                "nestedLegend": False}]}
        series = "bar_stacked" if self.shape == "bar" else self.shape
        layer: dict[str, Any] = {"layerId": LAYER, "layerType": "data", "seriesType": series,
                                 "xAccessor": buckets[0], "accessors": metrics}
        if len(buckets) > 1:
            layer["splitAccessor"] = buckets[1]
        return {"legend": {"isVisible": True, "position": "right"}, "valueLabels": "hide",
                "fittingFunction": "None", "preferredSeriesType": series, "layers": [layer]}

    def saved_object(self) -> dict[str, Any]:
        first_metric = "m0" if self.metrics else None
        columns = {ident: column.spec(first_metric) for ident, column in self.columns().items()}
        layer = {"columns": columns, "columnOrder": list(columns), "incompleteColumns": {}}
        state = {"datasourceStates": {"formBased": {"layers": {LAYER: layer}}},
                 "visualization": self._visualization(),
                 "query": {"query": self.query, "language": "kuery"}, "filters": [],
                 "internalReferences": [], "adHocDataViews": {}}
        return {"type": "lens", "id": self.id,
                "attributes": {"title": self.title, "description": self.description,
                               "visualizationType": self.visualization_type(), "state": state},
                "references": [{"type": "index-pattern", "id": self.view.id,
                                "name": f"indexpattern-datasource-layer-{LAYER}"}],
                "managed": False, **LENS_VERSION}


# --- dashboards --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Panel:
    lens: Lens
    width: int  # of 48
    height: int = 8


@dataclass(frozen=True)
class Dashboard:
    id: str
    title: str
    description: str
    rows: tuple[tuple[Panel, ...], ...]  # laid out left to right, top to bottom
    query: str = ""  # KQL every panel inherits (the agency dashboards: the agency)
    time_from: str = "now-30d"
    searches: tuple[SavedSearch, ...] = field(default=())  # shown below the charts

    def panels(self) -> list[tuple[str, Panel, dict[str, int]]]:
        """(panel index, panel, grid position), in reading order."""
        placed: list[tuple[str, Panel, dict[str, int]]] = []
        y = 0
        for row in self.rows:
            x = 0
            for panel in row:
                placed.append((f"p{len(placed) + 1}", panel, {"x": x, "y": y, "w": panel.width, "h": panel.height}))
                x += panel.width
            y += max(panel.height for panel in row)
        return placed

    def saved_object(self) -> dict[str, Any]:
        panels, references = [], []
        for index, panel, grid in self.panels():
            panels.append({"type": "lens", "gridData": {**grid, "i": index}, "panelIndex": index,
                           "embeddableConfig": {"enhancements": {}}, "panelRefName": f"panel_{index}"})
            references.append({"name": f"{index}:panel_{index}", "type": "lens", "id": panel.lens.id})
        y = max((grid["y"] + grid["h"] for _, _, grid in self.panels()), default=0)
        for number, search in enumerate(self.searches, len(panels) + 1):
            index = f"p{number}"
            panels.append({"type": "search", "gridData": {"x": 0, "y": y, "w": GRID_COLUMNS, "h": 12, "i": index},
                           "panelIndex": index, "embeddableConfig": {"enhancements": {}},
                           "panelRefName": f"panel_{index}"})
            references.append({"name": f"{index}:panel_{index}", "type": "search", "id": search.id})
            y += 12
        source = {"query": {"query": self.query, "language": "kuery"}, "filter": []}
        attributes = {
            "title": self.title, "description": self.description, "panelsJSON": _json(panels),
            "optionsJSON": _json({"useMargins": True, "syncColors": True, "syncCursor": True, "syncTooltips": False,
                                  "hidePanelTitles": False}),
            "timeRestore": True, "timeFrom": self.time_from, "timeTo": "now",
            "refreshInterval": {"pause": True, "value": 60000},
            "kibanaSavedObjectMeta": {"searchSourceJSON": _json(source)},
        }
        return {"type": "dashboard", "id": self.id, "attributes": attributes, "references": references,
                "managed": False, **DASHBOARD_VERSION}
