"""mkdocs hook: the API page lists every name the package faces export, read from the faces
themselves (``__all__``), so a name added to a face is documented without editing the page, and a
name that cannot be found fails the strict build."""

from __future__ import annotations

import importlib

FACES = ("kidata.sources", "kidata.tokenizers", "kidata.pipelines", "kidata.loader", "kidata.model",
         "kidata.training", "kidata.eval", "kidata.policy")
MARKER = "<!-- api: the package faces -->"


def face_references(face: str) -> list[str]:
    """``module.name`` of every name ``face`` exports, where the name is defined."""
    module = importlib.import_module(face)
    exports = getattr(module, "_EXPORTS", {})
    names = getattr(module, "__all__", None) or [name for name in vars(module) if not name.startswith("_")
                                                   and getattr(vars(module)[name], "__module__", None) == face]
    references = []
    for name in names:
        home = exports.get(name) or getattr(getattr(module, name), "__module__", None) or face
        references.append(f"{home if home.startswith('kidata') else face}.{name}")
    return references


def api_markdown() -> str:
    sections = []
    for face in FACES:
        sections.append(f"## `{face}`\n")
        doc = (importlib.import_module(face).__doc__ or "").strip().split("\n\n")[0]
        sections.append(doc + "\n")
        sections += [f"::: {reference}\n" for reference in face_references(face)]
    return "\n".join(sections)


def on_page_markdown(markdown: str, page, **_) -> str:
    if page.file.src_uri == "api.md":
        return markdown.replace(MARKER, api_markdown())
    return markdown
