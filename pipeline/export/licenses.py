"""Licence strings as the Hub's licence ids, and the conditions a licence puts on a mixture.

A source spec writes its licence as people do ("CC BY-SA 4.0", "cc-by-sa-4.0", "Apache 2.0",
"GNU GPL v3", "CC0"); the card's ``license`` takes the Hub's ids. A licence the Hub has no id
for is ``other``, named by ``license_name`` and linked by ``license_link``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..models import is_noncommercial

# The Hub's licence ids, from huggingface/hub-docs docs/hub/repositories-licenses.md
# (commit 008d54d08fd9d5d05ed2840bebb0b61111326a15). Anything else shows as an unknown licence.
HUB_LICENSE_IDS = frozenset(
    {
        "apache-2.0", "mit", "openrail", "bigscience-openrail-m", "creativeml-openrail-m",
        "bigscience-bloom-rail-1.0", "bigcode-openrail-m", "afl-3.0", "artistic-2.0",
        "bsl-1.0", "bsd", "bsd-2-clause", "bsd-3-clause", "bsd-3-clause-clear", "c-uda", "cc",
        "cc0-1.0", "cc-by-2.0", "cc-by-2.5", "cc-by-3.0", "cc-by-4.0", "cc-by-sa-3.0",
        "cc-by-sa-4.0", "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0", "cc-by-nd-4.0",
        "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0",
        "cc-by-nc-sa-4.0", "cdla-sharing-1.0", "cdla-permissive-1.0", "cdla-permissive-2.0",
        "wtfpl", "ecl-2.0", "epl-1.0", "epl-2.0", "etalab-2.0", "eupl-1.1", "agpl-3.0", "gfdl",
        "gpl", "gpl-2.0", "gpl-3.0", "lgpl", "lgpl-2.1", "lgpl-3.0", "isc", "lppl-1.3c",
        "ms-pl", "mpl-2.0", "odc-by", "odbl", "openrail++", "osl-3.0", "postgresql", "ofl-1.1",
        "ncsa", "unlicense", "zlib", "pddl", "lgpl-lr", "deepfloyd-if-license", "llama2",
        "gemma", "unknown", "other",
    }
)  # fmt: skip

# Long names and spellings, rewritten to one-word elements (no dashes, so a spelled-out id
# such as "cc-by-sa-4.0" splits the same way). Order matters: the longer phrase first.
_PHRASES: tuple[tuple[str, str], ...] = (
    (r"creative\s*commons", " cc "),
    (r"\bcc[\s_-]*(?:0|zero)\b", " cc0 "),
    (r"\bpublic\s+domain\s+dedication\b(?!\s+and)", " cc0 "),
    (r"\battribution\b", " by "),
    (r"\bshare[\s_-]*alike\b", " sa "),
    (r"\bnon[\s_-]*commercial\b", " nc "),
    (r"\bno[\s_-]*deriv(?:ative)?s?\b", " nd "),
    (r"\blesser\s+general\s+public\s+license\s+for\s+linguistic\s+resources\b", " lgpllr "),
    (r"\blgpl[\s_-]*lr\b", " lgpllr "),
    (r"\b(?:gnu\s+)?affero\s+general\s+public\b", " agpl "),
    (r"\b(?:gnu\s+)?(?:lesser|library)\s+general\s+public\b", " lgpl "),
    (r"\b(?:gnu\s+)?general\s+public\b", " gpl "),
    (r"\b(?:gnu\s+)?free\s+documentation\b", " gfdl "),
    (r"\bgnu\b", " "),
    (r"\bmozilla\s+public\b", " mpl "),
    (r"\beclipse\s+public\b", " epl "),
    (r"\beuropean\s+union\s+public\b", " eupl "),
    (r"\bacademic\s+free\b", " afl "),
    (r"\bopen\s+software\b", " osl "),
    (r"\beducational\s+community\b", " ecl "),
    (r"\bboost\s+software\b", " bsl "),
    (r"\blatex\s+project\s+public\b", " lppl "),
    (r"\bmicrosoft\s+public\b|\bms[\s_-]*pl\b", " mspl "),
    (r"\bopen\s+data\s+commons\s+public\s+domain\s+dedication(?:\s+and\s+license)?\b", " pddl "),
    (r"\bopen\s+data\s+commons\s+(?:open\s+database|odbl)\b|\bopen\s+database\b", " odbl "),
    (r"\bopen\s+data\s+commons\s+(?:attribution|by)\b|\bodc[\s_-]*by\b", " odcby "),
    (r"\bcommunity\s+data\s+license\s+agreement\b", " cdla "),
    (r"\bcomputational\s+use\s+of\s+data\b|\bc[\s_-]*uda\b", " cuda "),
    (r"\bthe\s+unlicense\b", " unlicense "),
    (r"\bexpat\b", " mit "),
    (r"\bllama[\s_-]*2\b", " llama2 "),
    (r"\b(?:2|two)[\s_-]*clause\b|\bsimplified\b", " twoclause "),
    (r"\b(?:3|three)[\s_-]*clause\b|\bnew\b|\brevised\b|\bmodified\b", " threeclause "),
    # Filler that never changes which licence is meant.
    (r"\blicen[cs]es?\b|\bversion\b|\binternational\b|\bunported\b|\bgeneric\b", " "),
    (r"\buniversal\b|\bagreement\b|\bterms\s+of\s+use\b|\bpublic\b", " "),
    (r"\bor[\s_-]*later\b|\bonly\b|\+", " "),
    (r"\bv(?=\d)", " "),
)
# The one-word elements that stand for ids with a dash.
_DASHED = {
    "mspl": "ms-pl",
    "cuda": "c-uda",
    "odcby": "odc-by",
    "lgpllr": "lgpl-lr",
    "twoclause": "2-clause",
    "threeclause": "3-clause",
}
# A family and its version glued together: gplv3, gpl3, apache2, lgpl2.1.
_GLUED = re.compile(r"^(apache|gpl|lgpl|agpl|mpl|epl|eupl|afl|osl|ecl|gfdl)v?(\d+(?:\.\d+)?)$")
_VERSION = re.compile(r"^\d+(?:\.\d+)*[a-z]?$")
_CC_ELEMENTS = ("by", "nc", "nd", "sa")
# A family named without a version, where one version is what people mean.
_UNVERSIONED = {"apache": "apache-2.0", "agpl": "agpl-3.0", "mpl": "mpl-2.0"}
_FAMILY_IDS = frozenset({"odc-by", "odbl", "gfdl", "pddl", "bsd", "gpl", "lgpl"})
_COPYLEFT = frozenset({"gpl", "agpl", "lgpl", "gfdl", "odbl", "cdla-sharing"})


def _tokens(text: str) -> list[str]:
    s = " " + text.lower().replace("licence", "license") + " "
    for pattern, repl in _PHRASES:
        s = re.sub(pattern, repl, s)
    out: list[str] = []
    for token in re.findall(r"[a-z0-9]+(?:\.[a-z0-9]+)*", s):
        glued = _GLUED.match(token)
        out += [glued.group(1), glued.group(2)] if glued else [token]
    return out


def _version(token: str) -> str:
    return token if "." in token else f"{token}.0"


def _parse(text: str) -> tuple[str, list[str], str | None]:
    """(family, elements, version): ``("cc", ["by", "sa"], "4.0")``, ``("gpl", [], "3.0")``."""
    tokens = _tokens(text)
    version = next((_version(t) for t in tokens if _VERSION.match(t)), None)
    words = [_DASHED.get(t, t) for t in tokens if not _VERSION.match(t)]
    elements = [e for e in _CC_ELEMENTS if e in words]
    if "cc0" in words:
        return "cc0", [], "1.0"
    if "cc" in words or (elements and elements[0] == "by" and set(words) <= set(elements)):
        return "cc", elements, version
    if "bsd" in words:
        rest = [w for w in ("2-clause", "3-clause") if w in words]
        return "-".join(["bsd", *rest, *(["clear"] if "clear" in words else [])]), [], None
    return "-".join(words), [], version


def hub_license_id(text: str) -> str | None:
    """The Hub's id for a licence string, or None when the Hub has none for it."""
    plain = text.strip().lower()
    if plain in HUB_LICENSE_IDS and plain != "other":
        return plain
    family, elements, version = _parse(text)
    if family == "cc":
        if not elements:
            return "cc" if version is None else None
        key = "cc-" + "-".join(elements) + (f"-{version}" if version else "")
        return key if key in HUB_LICENSE_IDS else None
    if family == "cc0":
        return "cc0-1.0"
    # With its version if the Hub has that id, else the family's id where the Hub has one for
    # every version (odc-by, odbl, gfdl), else the version people mean when they give none
    # (Apache). MIT-0 is not MIT: no family fallback for a family with an id of its own.
    candidates = [f"{family}-{version}" if version else family]
    if family in _FAMILY_IDS:
        candidates.append(family)
    if version is None and family in _UNVERSIONED:
        candidates.append(_UNVERSIONED[family])
    for candidate in candidates:
        if candidate in HUB_LICENSE_IDS and candidate != "other":
            return candidate
    return None


def license_slug(text: str) -> str:
    """A ``license_name`` for a licence the Hub has no id for: lowercase letters, digits, dots
    and dashes, as the Hub takes it."""
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-.")[:96] or "custom"


@dataclass(frozen=True)
class Terms:
    """What a licence asks of whoever builds on the rows."""

    share_alike: bool  # adaptations must carry the same (or a compatible) licence
    noncommercial: bool  # no commercial use
    no_derivatives: bool  # no adaptations shared at all


def license_terms(text: str) -> Terms:
    family, elements, _ = _parse(text)
    hub_id = hub_license_id(text) or ""
    copyleft = family in _COPYLEFT or hub_id.split("-")[0] in _COPYLEFT
    return Terms(
        share_alike="sa" in elements or copyleft,
        noncommercial="nc" in elements or is_noncommercial(text),
        no_derivatives="nd" in elements,
    )


def license_url(text: str) -> str | None:
    """The licence's own page, for Creative Commons licences the Hub has no id for (CC BY-SA
    2.0, CC BY-ND 3.0): the link a card gives for ``other``."""
    family, elements, version = _parse(text)
    if family == "cc" and elements and version:
        return f"https://creativecommons.org/licenses/{'-'.join(elements)}/{version}/"
    return None
