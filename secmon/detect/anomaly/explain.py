"""An anomaly explained: the features that set the window apart, with their actual value, the entity's
own typical value and the population's percentile; the values never seen; a query for the raw events.
Built here (pure) and rendered here in Vietnamese or English, for emails and `secmon incidents show`."""

from __future__ import annotations

from datetime import datetime

from secmon.detect.anomaly.detector import Detector
from secmon.detect.anomaly.fit import ScoredWindow, percentile, typical
from secmon.detect.anomaly.trained import CENTRE, TrainedModel
from secmon.model import Contribution, Explanation
from secmon.types import AGENCY_FIELD, iso

TOP = 5  # features shown
MIN_SHARE = 0.05  # smaller contributions are noise
MAX_NEW = 10  # new values shown per feature


def explain(model: TrainedModel, detector: Detector, scored: ScoredWindow, note: str = "") -> Explanation:
    own = typical(model, scored.row.entity)
    order = sorted(range(len(model.columns)), key=lambda c: -scored.attribution[c])
    contributions = tuple(
        Contribution(feature=model.columns[c], actual=round(float(scored.measured.vector[c]), 4),
                     typical=None if own is None else round(own[c], 4),
                     percentile=round(percentile(model, c, float(scored.measured.vector[c])), 1),
                     share=round(float(scored.attribution[c]), 3))
        for c in order[:TOP] if scored.attribution[c] >= MIN_SHARE)
    novel = tuple((name, values[:MAX_NEW]) for name, values in scored.measured.novel.items() if values)
    return Explanation(score=round(scored.score, 4), threshold=round(model.threshold, 4), model=model.id,
                       contributions=contributions, new_values=novel,
                       query=kql(detector, scored.row.agency, scored.row.entity, scored.row.start,
                                 scored.row.start + detector.window), note=note,
                       centre_wide=model.agency == CENTRE and detector.scope == "agency")


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def kql(detector: Detector, agency: str, entity: str, start: datetime, end: datetime) -> str:
    """A Kibana query (KQL) for the window's events: paste it in Discover over the events index."""
    parts = [f"{AGENCY_FIELD} : {_quoted(agency)}", f"{detector.entity} : {_quoted(entity)}"]
    for name, values in detector.events:
        parts.append(f"{name} : " + (_quoted(values[0]) if len(values) == 1 else
                                     "(" + " or ".join(_quoted(v) for v in values) + ")"))
    parts.append(f'@timestamp >= "{iso(start)}" and @timestamp < "{iso(end)}"')
    return " and ".join(parts)


TEXT = {
    "en": {"why": "Why it is anomalous", "score": "anomaly score {score:.3f} (threshold {threshold:.3f}, model {model})",
           "row": "- {feature}: {actual} ({usual}; above {percentile:.0f}% of baseline windows; {share:.0%} of the "
                  "isolation)",
           "usual": "usually {typical} for this entity", "no_history": "an entity with no history",
           "new": "- never seen before in {feature}: {values}",
           "query": "Raw events (Kibana query)",
           "centre": "scored by the centre-wide model (this agency has too little baseline of its own)"},
    "vi": {"why": "Vì sao bất thường", "score": "điểm bất thường {score:.3f} (ngưỡng {threshold:.3f}, mô hình {model})",
           "row": "- {feature}: {actual} ({usual}; cao hơn {percentile:.0f}% cửa sổ dữ liệu nền; đóng góp "
                  "{share:.0%})",
           "usual": "thường là {typical} với đối tượng này", "no_history": "đối tượng chưa có lịch sử",
           "new": "- giá trị chưa từng thấy ở {feature}: {values}",
           "query": "Sự kiện gốc (truy vấn Kibana)",
           "centre": "chấm điểm bằng mô hình chung của trung tâm (đơn vị chưa đủ dữ liệu nền riêng)"},
}


def _number(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.3g}"


def lines(explanation: Explanation, language: str) -> list[str]:
    text = TEXT.get(language, TEXT["en"])
    out = [f"{text['why']}: " + text["score"].format(score=explanation.score, threshold=explanation.threshold,
                                                    model=explanation.model)]
    for c in explanation.contributions:
        usual = text["usual"].format(typical=_number(c.typical)) if c.typical is not None else text["no_history"]
        out.append(text["row"].format(feature=c.feature, actual=_number(c.actual), usual=usual,
                                      percentile=c.percentile, share=c.share))
    for feature, values in explanation.new_values:
        out.append(text["new"].format(feature=feature, values=", ".join(values)))
    if explanation.centre_wide:
        out.append(text["centre"])
    if explanation.note:
        out.append(explanation.note)
    if explanation.query:
        out += [f"{text['query']}:", f"  {explanation.query}"]
    return out
