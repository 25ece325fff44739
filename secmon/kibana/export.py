"""A bundle of saved objects -> the NDJSON that Kibana's import API reads. Pure and byte-stable.

Objects come in dependency order (data views, saved searches, charts, dashboards),
one JSON document a line with sorted keys, so the same source always gives the same
file and a review diff shows only what changed.
"""

from __future__ import annotations

import json
from typing import Any

from secmon.kibana.catalog import Bundle


def saved_objects(bundle: Bundle) -> list[dict[str, Any]]:
    return ([view.saved_object() for view in bundle.views] + [search.saved_object() for search in bundle.searches]
            + [chart.saved_object() for chart in bundle.charts]
            + [board.saved_object() for board in bundle.dashboards])


def to_ndjson(objects: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(o, ensure_ascii=False, sort_keys=True) + "\n" for o in objects)
