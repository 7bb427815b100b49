"""STIX 2.1 bundles from ner-batch records, built with the ``stix2`` library.

One bundle per document: a ``report`` named by the document's id, and one object per distinct
entity, mapped from DNRTI's types:

=========  =============================================  ==========================================
DNRTI      STIX 2.1                                       why
=========  =============================================  ==========================================
HackOrg    intrusion-set                                  a named adversary group (APT28, Lazarus);
                                                          threat-actor would claim an identity
                                                          behind it that the text rarely gives
Tool       tool                                           DNRTI's Tool mixes malware families and
                                                          dual-use tools; ``tool`` claims no
                                                          maliciousness the tagger cannot know
SamFile    file (cyber observable, by name)               a sample's file name is an observable,
                                                          not a malware family
SecTeam    identity (organization)                        security vendors and teams
Org        identity (organization)                        other organizations
Idus       identity (class), ``sectors`` when the text    an industry is a class of identities;
           matches the industry-sector vocabulary         the vocabulary is matched by keyword
Area       location: ``country`` (ISO 3166-1) or          STIX requires a country or region; a
           ``region`` (region vocabulary)                 place name we cannot resolve gets no
                                                          object (see below)
Exp        vulnerability (``cve`` external reference      a CVE id is what platforms merge on
           when the text is a CVE id)
OffAct,    attack-pattern                                 offensive actions and methods
Way                                                       (spear-phishing, watering hole) are TTPs
Time,      no object                                      STIX has no object for a bare date,
Purp,                                                     purpose or feature; they stay in the
Features                                                  report's ``x_ner_batch_entities``
=========  =============================================  ==========================================

Every mention of every type, with its offsets, label, text, score and the id of the object it
became (``null`` when none), is in the report's custom property ``x_ner_batch_entities``;
each object carries its mentions in ``x_ner_batch_mentions`` and ``confidence`` (0-100, the
best mention's score). These two ``x_``-prefixed properties are the only custom ones.

Identifiers are deterministic: UUIDv5 of the type and the normalized entity (case and
spacing folded; a country by its code, a CVE by its id), so the same entity has the same id
in every document and every run and platforms merge them. Files use STIX's own deterministic
observable id. ``created``/``modified``/``published`` are the time of the run.
A document with no entities gets a report whose ``object_refs`` (which STIX requires to be
non-empty) names ner-batch's own identity; an unreadable document gets a ``note`` with the
reason.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://github.com/ner-batch/stix")
CUSTOM = ("x_ner_batch_entities", "x_ner_batch_mentions")
MAPPING = {
    "HackOrg": "intrusion-set", "Tool": "tool", "SamFile": "file", "SecTeam": "identity", "Org": "identity",
    "Idus": "identity", "Area": "location", "Exp": "vulnerability", "OffAct": "attack-pattern", "Way": "attack-pattern",
    "Time": None, "Purp": None, "Features": None,
}
_CVE = re.compile(r"^CVE-\d{4}-\d{4,}$", re.IGNORECASE)

REGIONS = {
    "africa": "africa", "eastern africa": "eastern-africa", "east africa": "eastern-africa", "northern africa": "northern-africa",
    "north africa": "northern-africa", "southern africa": "southern-africa", "western africa": "western-africa",
    "west africa": "western-africa", "americas": "americas", "latin america": "latin-america-caribbean",
    "south america": "south-america", "central america": "central-america", "caribbean": "caribbean",
    "north america": "northern-america", "northern america": "northern-america", "asia": "asia", "central asia": "central-asia",
    "east asia": "eastern-asia", "eastern asia": "eastern-asia", "south asia": "southern-asia", "southern asia": "southern-asia",
    "southeast asia": "south-eastern-asia", "south east asia": "south-eastern-asia", "south-east asia": "south-eastern-asia",
    "middle east": "western-asia", "western asia": "western-asia", "europe": "europe", "eastern europe": "eastern-europe",
    "western europe": "western-europe", "northern europe": "northern-europe", "southern europe": "southern-europe",
    "oceania": "oceania", "asia pacific": "asia", "asia-pacific": "asia", "apac": "asia",
}
COUNTRIES = {
    "AF": "afghanistan", "AM": "armenia", "AR": "argentina", "AU": "australia|australian", "AT": "austria",
    "AZ": "azerbaijan", "BH": "bahrain", "BD": "bangladesh", "BY": "belarus|belarusian", "BE": "belgium", "BR": "brazil|brazilian",
    "BG": "bulgaria", "KH": "cambodia", "CA": "canada|canadian", "CL": "chile", "CN": "china|chinese|prc|people's republic of china",
    "CO": "colombia", "HR": "croatia", "CU": "cuba", "CZ": "czech republic|czechia", "DK": "denmark", "EG": "egypt|egyptian",
    "EE": "estonia", "FI": "finland", "FR": "france|french", "GE": "georgia", "DE": "germany|german", "GR": "greece",
    "HK": "hong kong", "HU": "hungary", "IN": "india|indian", "ID": "indonesia|indonesian", "IR": "iran|iranian",
    "IQ": "iraq|iraqi", "IE": "ireland", "IL": "israel|israeli", "IT": "italy|italian", "JP": "japan|japanese",
    "JO": "jordan", "KZ": "kazakhstan", "KE": "kenya", "KP": "north korea|north korean|dprk",
    "KR": "south korea|south korean|korea|republic of korea", "KW": "kuwait", "KG": "kyrgyzstan", "LA": "laos",
    "LV": "latvia", "LB": "lebanon|lebanese", "LT": "lithuania", "MY": "malaysia|malaysian", "MX": "mexico|mexican",
    "MD": "moldova", "MN": "mongolia|mongolian", "MM": "myanmar|burma", "NP": "nepal", "NL": "netherlands|holland|dutch",
    "NZ": "new zealand", "NG": "nigeria", "NO": "norway", "OM": "oman", "PK": "pakistan|pakistani",
    "PS": "palestine|palestinian", "PE": "peru", "PH": "philippines|philippine", "PL": "poland|polish", "PT": "portugal",
    "QA": "qatar", "RO": "romania", "RU": "russia|russian|russian federation", "SA": "saudi arabia|saudi",
    "RS": "serbia", "SG": "singapore", "SK": "slovakia", "SI": "slovenia", "ZA": "south africa", "ES": "spain|spanish",
    "LK": "sri lanka", "SE": "sweden", "CH": "switzerland|swiss", "SY": "syria|syrian", "TW": "taiwan|taiwanese",
    "TJ": "tajikistan", "TH": "thailand|thai", "TR": "turkey|turkish|türkiye", "TM": "turkmenistan",
    "UA": "ukraine|ukrainian", "AE": "united arab emirates|uae", "GB": "united kingdom|uk|u.k.|britain|great britain|british|england",
    "US": "united states|united states of america|usa|u.s.|u.s.a.|us|america|american", "UZ": "uzbekistan",
    "VE": "venezuela", "VN": "vietnam|viet nam|vietnamese", "YE": "yemen",
}
_COUNTRY = {name: code for code, names in COUNTRIES.items() for name in names.split("|")}
SECTORS = [  # (keyword in the lower-cased text, industry-sector-ov value)
    ("bank", "financial-services"), ("financ", "financial-services"), ("government", "government"), ("ministr", "government"),
    ("embass", "government"), ("diplomat", "government"), ("energy", "energy"), ("oil", "energy"), ("power", "utilities"),
    ("defen", "defense"), ("military", "defense"), ("telecom", "telecommunications"), ("health", "healthcare"),
    ("hospital", "healthcare"), ("medical", "healthcare"), ("educat", "education"), ("universit", "education"),
    ("academ", "education"), ("aerospace", "aerospace"), ("aviation", "aerospace"), ("pharma", "pharmaceuticals"),
    ("manufactur", "manufacturing"), ("chemic", "chemical"), ("retail", "retail"), ("technolog", "technology"),
    ("software", "technology"), ("transport", "transportation"), ("logistic", "transportation"), ("shipping", "transportation"),
    ("media", "entertainment"), ("entertain", "entertainment"), ("insur", "insurance"), ("ngo", "non-profit"),
    ("non-profit", "non-profit"), ("utilit", "utilities"), ("mining", "mining"), ("hotel", "hospitality-leisure"),
    ("hospitality", "hospitality-leisure"), ("automotive", "automotive"), ("construction", "construction"),
    ("agricultur", "agriculture"), ("nuclear", "infrastructure-nuclear"), ("infrastructure", "infrastructure"),
]


class StixUnavailable(RuntimeError):
    """The stix2 library is not installed."""


def _stix2():
    try:
        import stix2
    except ImportError:
        raise StixUnavailable("STIX output needs the stix2 library: pip install 'ner-batch[stix]'") from None
    return stix2


def normalize(text: str) -> str:
    return " ".join(text.lower().strip(" \t\"'“”‘’()[]{}.,;:").split())


def stable_id(kind: str, key: str) -> str:
    return f"{kind}--{uuid.uuid5(NAMESPACE, kind + '|' + key)}"


def resolve_location(text: str) -> dict[str, str] | None:
    """``{"country": "RU"}`` or ``{"region": "eastern-europe"}`` for a place name, else None."""
    key = normalize(text)
    key = key[4:] if key.startswith("the ") else key
    if key in _COUNTRY:
        return {"country": _COUNTRY[key]}
    if key in REGIONS:
        return {"region": REGIONS[key]}
    return None


def sectors(text: str) -> list[str]:
    low = text.lower()
    return sorted({sector for word, sector in SECTORS if word in low})


class StixBuilder:
    """Turns records (the JSON objects ``ner-batch tag`` writes) into STIX 2.1 bundles."""

    def __init__(self, timestamp: str):
        self.stix2 = _stix2()
        self.time = timestamp
        self.identity_id = stable_id("identity", "ner-batch")

    def _identity(self):
        return self.stix2.Identity(id=self.identity_id, name="ner-batch", identity_class="system",
                                   description="named-entity tagger for CTI text that produced these objects",
                                   created=self.time, modified=self.time)

    def _object(self, label: str, text: str, mentions: list[dict[str, Any]]):
        """The STIX object for one distinct entity, or None when its type has none."""
        s, kind = self.stix2, MAPPING.get(label)
        custom = {"x_ner_batch_mentions": mentions, "allow_custom": True}
        common = {"created": self.time, "modified": self.time, "created_by_ref": self.identity_id,
                  "confidence": max(0, min(100, round(max(m["score"] for m in mentions) * 100))), **custom}
        key = normalize(text)
        if kind == "intrusion-set":
            return s.IntrusionSet(id=stable_id(kind, key), name=text, **common)
        if kind == "tool":
            return s.Tool(id=stable_id(kind, key), name=text, **common)
        if kind == "attack-pattern":
            return s.AttackPattern(id=stable_id(kind, key), name=text, **common)
        if kind == "identity":
            if label == "Idus":
                found = sectors(text)
                extra = {"sectors": found} if found else {}
                return s.Identity(id=stable_id(kind, "class|" + key), name=text, identity_class="class", **extra, **common)
            return s.Identity(id=stable_id(kind, "organization|" + key), name=text, identity_class="organization", **common)
        if kind == "location":
            where = resolve_location(text)
            if where is None:
                return None
            code = where.get("country") or where["region"]
            return s.Location(id=stable_id(kind, code), name=text, **where, **common)
        if kind == "vulnerability":
            if _CVE.match(text.strip()):
                cve = text.strip().upper()
                return s.Vulnerability(id=stable_id(kind, cve), name=cve, external_references=[{"source_name": "cve", "external_id": cve}],
                                       **common)
            return s.Vulnerability(id=stable_id(kind, key), name=text, **common)
        if kind == "file":  # an observable: no created/confidence; STIX derives its id from the name
            return s.File(name=text, **custom)
        return None

    def bundle(self, rec: dict[str, Any]) -> str:
        """One document's bundle, as one JSON line (no newline)."""
        s = self.stix2
        doc_id = str(rec.get("id", ""))
        report_id = stable_id("report", doc_id)
        identity = self._identity()
        if rec.get("error"):
            note_id = stable_id("note", doc_id)
            note = s.Note(id=note_id, abstract="ner-batch could not read this document", content=str(rec["error"]),
                          object_refs=[report_id], created=self.time, modified=self.time, created_by_ref=self.identity_id)
            report = s.Report(id=report_id, name=doc_id, published=self.time, object_refs=[note_id], created=self.time,
                              modified=self.time, created_by_ref=self.identity_id, report_types=["threat-report"],
                              allow_custom=True, x_ner_batch_entities=[])
            return s.Bundle(objects=[report, note, identity], allow_custom=True).serialize()
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for e in rec.get("entities", []):
            groups.setdefault((e["label"], normalize(e["text"])), []).append(e)
        objects, ref_of = {}, {}
        for (label, _), ents in groups.items():
            mentions = [{k: e[k] for k in ("start", "end", "score", "text") if k in e} for e in ents]
            obj = self._object(label, ents[0]["text"], mentions)
            if obj is None:
                continue
            if obj.id in objects:  # e.g. "Russia" and "Russian": one location, mentions merged
                merged = list(objects[obj.id]["x_ner_batch_mentions"]) + mentions
                obj = self._object(label, objects[obj.id]["name"], merged)
            objects[obj.id] = obj
            for e in ents:
                ref_of[(e["start"], e["end"])] = obj.id
        listed = [{**{k: e[k] for k in ("start", "end", "label", "text", "score") if k in e}, "ref": ref_of.get((e["start"], e["end"]))}
                  for e in rec.get("entities", [])]
        refs = sorted(objects) or [self.identity_id]
        report = s.Report(id=report_id, name=doc_id, published=self.time, object_refs=refs, created=self.time,
                          modified=self.time, created_by_ref=self.identity_id, report_types=["threat-report"],
                          allow_custom=True, x_ner_batch_entities=listed)
        return s.Bundle(objects=[report, *[objects[k] for k in sorted(objects)], identity], allow_custom=True).serialize()


def strip_custom(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without our declared custom properties (for validation with allow_custom=False)."""
    return {k: v for k, v in obj.items() if k not in CUSTOM}


def validate_line(line: str) -> int:
    """Parse one bundle line with stix2 (allow_custom=False once our declared custom properties
    are set aside); the number of objects. Raises on anything else custom or invalid."""
    s = _stix2()
    bundle = json.loads(line)
    objects = [strip_custom(o) for o in bundle["objects"]]
    s.parse({**bundle, "objects": objects}, allow_custom=False)
    return len(objects)
