"""The campaign report: per run targets, skips, tasks, confirmed %, delivered %, quota skips and tracked-link
clicks (a click on the run's tracked link, through the real unwrap and record path)."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlsplit

from sqlmodel import select

from scrm.campaigns.report import campaign_report, render_report
from scrm.campaigns.service import run_due
from scrm.db import SessionFactory, transaction
from scrm.links import LinkSigner, record_click
from scrm.models import CampaignBatch
from tests.campaigns.support import campaign_world, group_spec
from tests.conftest import TEST_CORP_ID

LAST_FRIDAY = datetime(2026, 11, 27, 11, 0, tzinfo=UTC)


async def test_report_counts_tasks_results_and_clicks(session_factory: SessionFactory) -> None:
    signer = LinkSigner(b"campaign-report-secret", "https://scrm.example.com")
    # a Friday in the past: clicks are audited at the wall clock's time, after the (virtual) planning time
    async with campaign_world(session_factory, start=LAST_FRIDAY, auto_confirm=False) as world:
        await world.seed_groups(owners=3, groups_per_owner=2)
        spec = group_spec().model_validate(
            {
                **group_spec().stored(),
                "content": {
                    "text": "周六试驾日",
                    "attachments": [
                        {"link": {"title": "报名", "url": "https://example.com/signup?d={{ dealer.code }}"}}
                    ],
                },
            }
        )
        await world.save(spec)
        await run_due(
            session_factory, TEST_CORP_ID, world.clock.utcnow(), world.policy, calls_per_minute=100, links=signer
        )
        await world.dispatch_until_idle()
        await world.track()
        msgids = sorted(world.state.group_msgs)
        world.state.confirm_groupmsg(msgids[0], world.state.group_msgs[msgids[0]].creator)  # one owner of three
        await world.advance(61)
        await world.track()

        async with session_factory() as session:
            batch = (await session.exec(select(CampaignBatch).order_by(CampaignBatch.batch_no))).first()
        assert batch is not None
        sent = world.state.group_msgs[batch.msgid].attachments[0]["link"]["url"]
        assert sent.startswith("https://scrm.example.com/l/")
        link = signer.unwrap(urlsplit(sent).path.rsplit("/", 1)[1])
        assert (link.url, link.source) == ("https://example.com/signup?d=D000", "campaign:friday:now")
        async with transaction(session_factory) as session:
            for _ in range(2):
                await record_click(session, link, world.clock.utcnow())

        async with session_factory() as session:
            report = await campaign_report(session, TEST_CORP_ID, "friday")
        [run] = report.runs
        assert (run.targets, run.planned, run.batches, run.tasks_created) == (6, 6, 3, 3)
        assert run.tasks_confirmed == 1 and run.confirmed_pct == 33.3
        assert run.results == {"sent": 2, "unsent": 4}  # the unconfirmed tasks' groups wait for their owners
        assert run.delivered_pct == 33.3
        assert (run.quota_skips, run.link_clicks) == (0, 2)
        text = render_report(report)
        assert "群主确认率 33.3%，送达率 33.3%，超出次数上限 0，链接点击 2" in text
