"""Every page and action of the studio, over a collection the real agent evolved on anvil (tests/studio/world.py).

Pages are public; actions that change anything need a login or the bearer token, and every form needs its CSRF
token. Refusals are checked by status code AND by the words a person reads on the page.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from agent.gates import GateReport, Gates
from agent.jobs import JobKind, JobState
from agent.metadata import cid_from_digest
from agent.review import Approved, Candidate, Rejected, ReviewGate, ReviewState
from agent.settings import GatesSettings
from agent.studio.service import Studio
from tests.studio.conftest import csrf_of
from tests.studio.world import API_TOKEN, CURATOR, World, candidate_from_token, submit
from tests.support.waiting import eventually

PNG = b"\x89PNG\r\n\x1a\n"
BEARER = {"Authorization": f"Bearer {API_TOKEN}"}


# -- pages ------------------------------------------------------------------------------------------------------


def test_the_gallery_shows_every_token_with_its_image_name_stage_and_traits(
    client: TestClient, world: World
) -> None:
    page = client.get("/")
    assert page.status_code == 200
    html = page.text
    for token_id in (1, 2, 6, 8):
        assert f'href="/tokens/{token_id}"' in html
    assert 'href="/tokens/7"' not in html  # burnt by the fusion
    assert "Chrysalis #1" in html and "not evolved yet" in html
    tokens = {
        t["token_id"]: t for t in client.get("/", headers={"Accept": "application/json"}).json()["tokens"]
    }
    assert (
        tokens[1]["stage"] == world.chain.stage(1) == 2
        and tokens[2]["stage"] == 1
        and tokens[8]["stage"] == 0
    )
    assert set(tokens[1]["traits"]) >= {"mood", "element"}
    image = tokens[1]["image"].removeprefix("ipfs://")
    assert f'src="/ipfs/{image}"' in html
    served = client.get(f"/ipfs/{image}")  # through the embedded gateway
    assert served.status_code == 200 and served.content.startswith(PNG)
    assert served.headers["content-type"] == "image/png"


def test_gallery_filters_by_stage_and_trait(client: TestClient) -> None:
    every = client.get("/api/tokens").json()["tokens"]
    two = [
        t["token_id"]
        for t in client.get("/?stage=2", headers={"Accept": "application/json"}).json()["tokens"]
    ]
    assert two == [t["token_id"] for t in every if t["stage"] == 2] == [1]
    element = next(t for t in every if t["token_id"] == 2)["traits"]["element"]
    shown = client.get(f"/?trait=element:{element}", headers={"Accept": "application/json"}).json()["tokens"]
    assert 2 in [t["token_id"] for t in shown] and all(t["traits"]["element"] == element for t in shown)
    html = client.get(f"/?stage=1&trait=element:{element}").text
    assert 'name="trait"' in html and "clear filters" in html
    assert "No token matches" in client.get("/?stage=9").text
    refused = client.get("/?stage=two")
    assert refused.status_code == 400 and "stage &#39;two&#39; is not a whole number" in refused.text


def test_the_token_page_shows_the_timeline_with_inputs_and_the_transaction_of_each_stage(
    client: TestClient, world: World
) -> None:
    detail = client.get("/api/tokens/1").json()
    stages = [v["stage"] for v in detail["timeline"]]
    assert stages == [1, 2]
    evolved = {
        int(e["args"]["requestId"]): e for e in world.chain.evolved() if int(e["args"]["tokenId"]) == 1
    }
    for view in detail["timeline"]:
        event = evolved[int(view["request_id"], 16)]
        assert view["tx_hash"] == "0x" + event["transactionHash"].hex().removeprefix("0x")
        assert view["block_number"] == event["blockNumber"] and view["provenance_matches"] is True
        assert view["cid"] == cid_from_digest(bytes(event["args"]["metadataDigest"]))
        names = {r["name"] for r in view["inputs"]["readings"]}
        assert {"wallet.held_seconds", "price.answer"} <= names
    assert detail["timeline"][0]["changed"] == sorted(
        detail["timeline"][0]["traits"]
    )  # the first sets them all

    html = client.get("/tokens/1").text
    assert html.count('class="stage-entry"') == 2
    assert "Inputs that caused it" in html and "wallet.held_seconds" in html
    assert "receipt anchored on-chain" in html
    assert "model #1, registered" in html  # the shipped sprite model is in the collection's registry
    assert "chrysalis/sprites-32@1" in html and "Weights sha256" in html
    assert 'action="/tokens/1/verify"' in html and "Inference receipt" in html
    assert "Request refresh" not in html  # only curators see it


def test_unknown_and_burnt_tokens_get_a_clear_404(client: TestClient) -> None:
    missing = client.get("/tokens/999")
    assert missing.status_code == 404 and "token 999 does not exist" in missing.text
    burnt = client.get("/tokens/7")
    assert burnt.status_code == 404 and "token 7 was burnt" in burnt.text
    assert client.get("/api/tokens/999").json()["error"] == "token 999 does not exist"


def test_the_operations_view_shows_jobs_cursor_lag_and_gas_from_the_receipts(
    client: TestClient, world: World
) -> None:
    ops = client.get("/api/ops").json()
    assert ops["jobs"]["confirmed"] >= 4 and ops["jobs"]["failed"] == 0
    assert ops["cursor_block"] is not None and ops["lag"] is not None and ops["lag"] >= 0
    hashes = {e["transactionHash"] for e in world.chain.evolved()}
    gas = sum(world.chain.w3.eth.get_transaction_receipt(h)["gasUsed"] for h in hashes)
    assert ops["gas_used"] == gas and ops["transactions"] == len(hashes)
    html = client.get("/ops").text
    assert "Watcher cursor" in html and f"{gas:,} gas" in html and "Next scheduled refresh" in html
    # every agent that worked this database, with its key (several agents may share one)
    assert ops["agents"] and all(a["signer"].lower() == world.chain.agent.lower() for a in ops["agents"])
    assert 'id="agents"' in html and ops["agents"][0]["worker_id"] in html


def test_the_gateway_is_read_only_and_the_node_rpc_is_not_exposed(client: TestClient) -> None:
    image = client.get("/api/tokens/1").json()["image"].removeprefix("ipfs://")
    assert client.post(f"/ipfs/{image}").status_code == 405
    assert client.post("/api/v0/add").status_code == 404
    assert client.post("/api/v0/pin/rm", params={"arg": image}).status_code == 404


# -- Verify -----------------------------------------------------------------------------------------------------


def wait_task(client: TestClient, task_id: str, timeout_s: float = 120) -> dict:
    def finished() -> dict | None:
        task = client.get(f"/api/verify/{task_id}").json()
        return task if task["state"] in ("done", "error") else None

    return eventually(finished, timeout_s, f"verify task {task_id} to finish", interval=0.2)


def test_verify_replays_a_stage_and_reports_match(client: TestClient) -> None:
    page = client.get("/tokens/1")
    r = client.post("/tokens/1/verify", data={"csrf_token": csrf_of(page.text), "stage": "1"})
    assert r.status_code == 303 and r.headers["location"].startswith("/tokens/1?verify=")
    task_id = r.headers["location"].split("verify=")[1].split("#")[0]
    task = wait_task(client, task_id)
    assert task["state"] == "done", task
    result = task["result"]
    assert result["verdict"] == "match" and result["mismatches"] == []
    assert {
        "chain.provenance",
        "metadata.image",
        "image.output.pixels_sha256",
        "input_snapshot_sha256",
    } <= set(result["checked"])
    shown = client.get(r.headers["location"]).text  # the page without JavaScript shows the outcome too
    assert 'class="verdict ok"' in shown and ">match<" in shown


def test_verify_of_a_stage_the_token_never_had_is_a_404(client: TestClient) -> None:
    token = csrf_of(client.get("/").text)
    r = client.post("/tokens/1/verify", data={"csrf_token": token, "stage": "5"},
                    headers={"Accept": "application/json"})  # fmt: skip
    assert r.status_code == 404 and r.json()["error"] == "token 1 has no stage 5"


def test_a_form_without_its_csrf_token_is_refused_with_403(client: TestClient, curator: TestClient) -> None:
    r = client.post("/tokens/1/verify", data={"stage": "1"})
    assert r.status_code == 403 and "CSRF check failed" in r.text and "reload the page" in r.text
    other_session = csrf_of(client.get("/").text)
    r = curator.post("/tokens/1/refresh", data={"csrf_token": other_session})
    assert r.status_code == 403 and "does not belong to your session" in r.text


# -- auth -------------------------------------------------------------------------------------------------------


def test_login_logout_and_their_refusals(client: TestClient) -> None:
    token = csrf_of(client.get("/login").text)
    wrong = client.post("/login", data={"username": CURATOR, "password": "nope", "csrf_token": token})
    assert wrong.status_code == 401 and "wrong name or password" in wrong.text
    forged = client.post("/login", data={"username": CURATOR, "password": "x"})
    assert forged.status_code == 403
    ok = client.post("/login", data={"username": CURATOR, "password": "studio-admin-password", "csrf_token": token,
                                     "next": "/review"})  # fmt: skip
    assert ok.status_code == 303 and ok.headers["location"] == "/review"
    page = client.get("/review")
    assert page.status_code == 200 and f"{CURATOR} · log out" in page.text
    assert client.post("/logout", data={"csrf_token": csrf_of(page.text)}).status_code == 303
    assert client.get("/review").status_code == 401


def test_changing_anything_needs_a_login_or_the_token(client: TestClient, studio: Studio) -> None:
    token = csrf_of(client.get("/").text)
    review_id = submit(studio)
    for path, data in [
        ("/tokens/1/refresh", {}),
        (f"/review/{review_id}/approve", {}),
        (f"/review/{review_id}/reject", {"reason": "no"}),
        (f"/review/{review_id}/regenerate", {"new_seed": "1"}),
        ("/review/approve", {"ids": str(review_id)}),
    ]:
        r = client.post(path, data={"csrf_token": token, **data})
        assert r.status_code == 401, path
        assert "Log in first" in r.text and 'href="/login?next=' in r.text
    assert studio.reviews.get(review_id).state == ReviewState.AWAITING
    page = client.get("/review")
    assert page.status_code == 401 and "Log in first" in page.text  # candidates are not public
    wrong = client.get("/api/review", headers={"Authorization": "Bearer wrong"})
    assert (
        wrong.status_code == 401 and wrong.json()["error"] == "the bearer token is not the studio's API token"
    )
    assert wrong.headers["www-authenticate"].startswith("Bearer")
    listed = client.get("/api/review", headers=BEARER)
    assert listed.status_code == 200
    item = next(i for i in listed.json()["items"] if i["id"] == review_id)
    # one shape for the API and `chrysalis review list --json` (ReviewItem.to_json)
    assert item == json.loads(json.dumps(studio.reviews.get(review_id).to_json(), default=str))
    assert item["image"] == f"ipfs://{item['image_cid']}"


def test_the_bearer_token_acts_without_csrf_and_is_recorded_as_its_user(
    client: TestClient, studio: Studio
) -> None:
    review_id = submit(studio)
    r = client.post(f"/review/{review_id}/approve", headers=BEARER)
    assert r.status_code == 200 and r.json()["state"] == "approved" and r.json()["decided_by"] == "api"


# -- actions ----------------------------------------------------------------------------------------------------


def test_request_refresh_queues_one_refresh_job(curator: TestClient, studio: Studio) -> None:
    assert "Request refresh" in curator.get("/tokens/2").text
    r = curator.post("/tokens/2/refresh", data={"csrf_token": curator.csrf})
    assert (
        r.status_code == 303 and "refresh of token 2 queued as job" in curator.get(r.headers["location"]).text
    )
    again = curator.post(
        "/tokens/2/refresh", data={"csrf_token": curator.csrf}, headers={"Accept": "application/json"}
    )
    assert again.status_code == 202 and again.json()["created"] is False
    job = studio.jobs.get(again.json()["job_id"])
    assert job.kind == JobKind.REFRESH and job.state == JobState.QUEUED
    assert job.payload == {"token_id": 2, "stage": 1, "source": "studio", "requested_by": CURATOR}
    assert "none scheduled" not in curator.get("/ops").text


def test_approve_records_the_curator_and_the_gate_sees_it(curator: TestClient, studio: Studio) -> None:
    review_id = submit(studio)
    item = studio.reviews.get(review_id)
    page = curator.get("/review")
    assert f'id="review-{review_id}"' in page.text and "Approve all genesis" in page.text
    r = curator.post(f"/review/{review_id}/approve", data={"csrf_token": curator.csrf, "revision": "1"},
                     headers={"Referer": "/review"})  # fmt: skip
    assert r.status_code == 303
    decision = ReviewGate(studio.reviews).decision(item.key)
    assert isinstance(decision, Approved) and decision.approved_by == CURATOR
    assert decision.artwork.provenance == item.candidate.provenance
    assert f"approved {item.label}" in curator.get("/review").text
    again = curator.post(f"/review/{review_id}/approve", data={"csrf_token": curator.csrf, "revision": "1"})
    assert again.status_code == 409 and f"it is approved by {CURATOR}" in again.text


def test_approving_a_revision_the_curator_did_not_see_is_refused(curator: TestClient, studio: Studio) -> None:
    review_id = submit(studio)
    r = curator.post(f"/review/{review_id}/approve", data={"csrf_token": curator.csrf, "revision": "2"})
    assert r.status_code == 409 and "not awaiting_review at revision 2" in r.text
    assert studio.reviews.get(review_id).state == ReviewState.AWAITING


def test_reject_needs_a_reason_and_ends_with_it(curator: TestClient, studio: Studio) -> None:
    review_id = submit(studio)
    empty = curator.post(f"/review/{review_id}/reject", data={"csrf_token": curator.csrf, "reason": "  "})
    assert empty.status_code == 400 and "a rejection needs a reason" in empty.text
    r = curator.post(f"/review/{review_id}/reject", data={"csrf_token": curator.csrf, "reason": "too dark"})
    assert r.status_code == 303
    decision = ReviewGate(studio.reviews).decision(studio.reviews.get(review_id).key)
    assert (
        isinstance(decision, Rejected) and decision.reason == "too dark" and decision.rejected_by == CURATOR
    )
    assert "too dark" in curator.get("/review?tab=rejected").text


def test_bulk_approve_selected_and_all_genesis(curator: TestClient, studio: Studio) -> None:
    picked = [submit(studio), submit(studio)]
    genesis = [submit(studio, kind="genesis") for _ in range(3)]
    seen = [f"{i}:{studio.reviews.get(i).revision}" for i in picked]  # ID:REVISION, as the queue's checkboxes
    r = curator.post("/review/approve", data={"csrf_token": curator.csrf, "ids": seen})
    assert r.status_code == 303
    assert all(studio.reviews.get(i).state == ReviewState.APPROVED for i in picked)
    assert all(studio.reviews.get(i).state == ReviewState.AWAITING for i in genesis)
    r = curator.post("/review/approve", data={"csrf_token": curator.csrf, "all_kind": "genesis"},
                     headers={"Accept": "application/json"})  # fmt: skip
    assert set(genesis) <= set(r.json()["approved"])
    assert all(studio.reviews.get(i).decided_by == CURATOR for i in genesis)
    nothing = curator.post("/review/approve", data={"csrf_token": curator.csrf})
    assert nothing.status_code == 400 and "no items were selected" in nothing.text


def test_regenerate_with_a_new_seed_and_strength_makes_a_revision_that_verifies(
    curator: TestClient, studio: Studio
) -> None:
    from agent.generate.verify import verify

    review_id = submit(studio, token_id=1)  # stage 2 of token 1: an image-to-image evolution
    before = studio.reviews.get(review_id)
    bad = curator.post(
        f"/review/{review_id}/regenerate", data={"csrf_token": curator.csrf, "strength": "1.5"}
    )
    assert bad.status_code == 400 and "strength 1.5 is outside (0, 1]" in bad.text
    form = {"csrf_token": curator.csrf, "new_seed": "1", "strength": "0.9", "revision": "1"}
    r = curator.post(f"/review/{review_id}/regenerate", data=form)
    assert r.status_code == 303
    assert studio.reviews.get(review_id).state == ReviewState.REGENERATING

    def regenerated() -> bool:
        if studio.regenerator._thread is None:  # the studio's own thread runs once a server has started it
            studio.regenerator.run_once()
        return studio.reviews.get(review_id).state != ReviewState.REGENERATING

    eventually(regenerated, 120, "the regeneration", interval=0.1)
    after = studio.reviews.get(review_id)
    assert after.state == ReviewState.AWAITING and after.revision == 2 and after.error is None
    c = after.candidate
    assert c.reroll == 1 and c.strength == 0.9 and c.provenance != before.candidate.provenance
    assert c.gates is not None and c.gates["passed"] and c.gates["reroll"] == 1  # gated: it passed first time
    assert c.receipt["seed"]["onchain_seed"] != before.candidate.receipt["seed"]["onchain_seed"]
    assert studio.repo.is_pinned(c.image_cid)  # held by the embedded node for display only

    def load(sha256: str, cid: str | None) -> bytes:
        return studio.catalog.image(str(cid))

    result = verify(dict(c.receipt), init_image_loader=load)
    assert result.match, result.mismatches
    trail = [e.action for e in studio.reviews.events(review_id)]
    assert trail == ["submitted", "regenerate", "regenerated"]
    assert "reroll #1" in curator.get("/review").text


@pytest.mark.parametrize("path", ["/", "/tokens/1", "/ops", "/login"])
def test_pages_are_phone_ready_and_wire_live_updates(client: TestClient, path: str) -> None:
    html = client.get(path).text
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert "/static/studio.js" in html and "/static/studio.css" in html
    css = client.get("/static/studio.css")
    assert css.status_code == 200 and "@media (min-width: 640px)" in css.text
    assert 'new EventSource("/events")' in client.get("/static/studio.js").text


def test_a_regenerated_candidate_is_signed_like_the_generate_stages_images(
    studio: Studio, tmp_path: Path
) -> None:
    from agent.credentials import ContentCredentials, create_dev_credentials, inspect_png, png_pixels_sha256
    from agent.generate.receipt import InferenceReceipt
    from agent.pipeline.generate import ImageSigning
    from agent.review import RegenerateRequest
    from agent.studio.regenerate import regenerate

    dev = create_dev_credentials(tmp_path / "credentials")
    signing = ImageSigning(
        ContentCredentials.from_files(dev.key_file, dev.certificate_chain, trust_anchors=dev.trust_anchors),
        chain_id=studio.index.deployment.chain_id,
        contract=studio.index.address,
    )
    item = studio.reviews.get(submit(studio, token_id=1))  # stage 3 of token 1: an image-to-image evolution
    c = regenerate(
        item.candidate, RegenerateRequest(1, None, "curator"), studio.repo, studio.settings.models,
        signing=signing, stage=item.stage, parent_stage=item.stage - 1,
    )  # fmt: skip
    png = studio.catalog.image(c.image_cid)
    report = inspect_png(png, trust_anchors=dev.trust_anchors)
    assert report.valid and report.trusted and report.problems == ()
    assert report.claim is not None and (report.claim.token_id, report.claim.stage) == (1, item.stage)
    assert report.claim.receipt_sha256 == InferenceReceipt.from_json(dict(c.receipt)).sha256()
    init_cid = c.receipt["image"]["request"]["init_image_cid"]
    assert init_cid and report.ingredients == (f"ipfs://{init_cid}",)
    output = c.receipt["image"]["output"]
    assert png_pixels_sha256(png, width=output["width"], height=output["height"]) == output["pixels_sha256"]


def test_review_items_show_each_quality_gate_result(curator: TestClient, studio: Studio) -> None:
    """A candidate flagged by the gates (here: a blocklisted word in its real lore) shows every gate's result."""
    base = candidate_from_token(studio, 2)
    word = base.lore.split()[0].strip(".,")
    gates = Gates(GatesSettings(blocklist=[word]))
    png = studio.catalog.image(base.image_cid)
    results = gates.check(png=png, lore=base.lore, traits=dict(base.traits), backend="embedded", token_id=2)
    report = GateReport(tuple(results), history=(("near_duplicate: 0 bits from token 1 stage 1",),))
    candidate = Candidate(dataclasses.replace(base.artwork, gates=report.to_json()), base.traits, base.name)
    item = studio.reviews.submit("evolve:gates", token_id=2, stage=3, candidate=candidate, kind="evolve")
    page = curator.get("/review").text
    assert "Quality gates: flagged (1 failed) after 1 reroll(s)" in page
    assert 'data-gate="lore_blocklist"' in page and "FAIL: contains blocked word(s)" in page
    assert 'data-gate="symmetry"' in page and "try 1 failed: near_duplicate" in page
    listed = curator.get("/api/review").json()
    mine = next(i for i in listed["items"] if i["id"] == item.id)
    assert mine["flagged"] and mine["gates"]["results"][0]["name"] == "near_duplicate"


def test_a_regenerated_candidate_is_gated_and_rerolled_like_the_pipelines(
    curator: TestClient, studio: Studio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The curator's regenerate runs the quality gates on the new candidate: one that fails is rerolled (next
    public reroll, up to gates.max_rerolls), and the item shows every gate's result, flagged if it still fails."""
    import hashlib

    from agent.gates import GateResult, reroll_seed
    from agent.review import RegenerateRequest
    from agent.studio.regenerate import regenerate

    review_id = submit(studio, token_id=2)
    item = studio.reviews.get(review_id)
    probe = regenerate(
        item.candidate, RegenerateRequest(1, None, CURATOR), studio.repo, studio.settings.models
    )
    bad = hashlib.sha256(studio.catalog.image(probe.image_cid)).hexdigest()  # what reroll 1 makes

    def known_bad(png: bytes, traits: object, backend: object) -> list[GateResult]:
        digest = hashlib.sha256(png).hexdigest()
        return [GateResult("known_bad", bad not in (digest, "*"), None, None, f"image {digest[:12]}")]

    def regenerate_via_the_route(max_rerolls: int) -> Candidate:
        settings = GatesSettings(max_rerolls=max_rerolls)
        monkeypatch.setattr(
            studio.regenerator, "gates", lambda: Gates(settings, plugins=[("known_bad", known_bad)])
        )
        revision = studio.reviews.get(review_id).revision
        form = {"csrf_token": curator.csrf, "new_seed": "1", "revision": str(revision)}
        assert curator.post(f"/review/{review_id}/regenerate", data=form).status_code == 303

        def regenerated() -> bool:
            if studio.regenerator._thread is None:
                studio.regenerator.run_once()
            return studio.reviews.get(review_id).state != ReviewState.REGENERATING

        eventually(regenerated, 120, "the regeneration", interval=0.1)
        after = studio.reviews.get(review_id)
        assert after.state == ReviewState.AWAITING and after.error is None, after.error
        return after.candidate

    # reroll 1 fails the plug-in: reroll 2 is made, passes, and says why reroll 1 failed
    c = regenerate_via_the_route(max_rerolls=1)
    assert c.reroll == 2 and c.receipt["seed"]["onchain_seed"] == reroll_seed(str(c.request_seed), 2)
    assert c.gates is not None and c.gates["passed"] and c.gates["reroll"] == 2 and not c.flagged
    assert c.gates["history"] == [[f"known_bad: image {bad[:12]}"]]
    assert [r["name"] for r in c.gates["results"]][0] == "near_duplicate"
    page = curator.get("/review").text
    assert "Quality gates: passed after 1 reroll(s)" in page and 'data-gate="known_bad"' in page

    # every image fails and no reroll is left: the candidate reaches the curator flagged, with its reasons
    bad = "*"
    c = regenerate_via_the_route(max_rerolls=0)
    assert c.reroll == 3 and c.flagged and c.gates is not None and c.gates["history"] == []
    assert c.gates["reasons"] == [
        f"known_bad: image {hashlib.sha256(studio.catalog.image(c.image_cid)).hexdigest()[:12]}"
    ]
    page = curator.get("/review").text
    assert "Quality gates: flagged (1 failed)" in page and "known_bad</strong> FAIL: image" in page
