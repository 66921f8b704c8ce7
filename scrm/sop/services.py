"""What the SOP engine keeps in a process: the catalog of templates (hot-reloaded), the bundles enrolments run on,
their renderers and compiled templates, the link signer, and the lifecycle hooks through which the engine's own
facts (a tag an SOP step added) reach the other features. Built once by the process's services."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from scrm.lifecycle import NO_HOOKS, LifecycleHooks
from scrm.links import LinkSigner
from scrm.models import SopVersion
from scrm.sop.catalog import Catalog, CatalogHolder
from scrm.sop.render import SopRenderer
from scrm.sop.spec import TemplateBundle
from scrm.templating.compiled import CompiledBundles


@dataclass
class SopServices:
    """What the engine needs from its process (see the module docstring)."""

    holder: CatalogHolder
    links: LinkSigner | None = None
    console_url: str = "https://work.weixin.qq.com/"
    _bundles: dict[tuple[str, str], TemplateBundle] = field(default_factory=dict)
    _renderers: dict[tuple[str, str], SopRenderer] = field(default_factory=dict)
    compiled: CompiledBundles = field(default_factory=CompiledBundles)
    hooks: LifecycleHooks = NO_HOOKS
    swept_generation: int = -1

    def catalog(self) -> Catalog:
        return self.holder.current()

    async def bundle(self, session: AsyncSession, template_id: str, version: str) -> TemplateBundle | None:
        """The exact version an enrolment started with: the running one, or the stored snapshot."""
        key = (template_id, version)
        cached = self._bundles.get(key)
        if cached is not None:
            return cached
        current = self.catalog().bundles.get(template_id)
        if current is not None and current.version == version:
            found: TemplateBundle | None = current
        else:
            row = (
                await session.exec(
                    select(SopVersion.spec).where(SopVersion.template_id == template_id, SopVersion.version == version)
                )
            ).first()
            found = TemplateBundle.from_snapshot(row) if row is not None else None
        if found is not None:
            self._bundles[key] = found
        return found

    def renderer(self, bundle: TemplateBundle) -> SopRenderer:
        key = (bundle.id, bundle.version)
        renderer = self._renderers.get(key)
        if renderer is None:
            renderer = self._renderers[key] = SopRenderer(bundle, links=self.links, compiled=self.compiled)
        return renderer
