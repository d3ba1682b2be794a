"""Write the example fine-tuning datasets (committed to the repository) from code, deterministically.

- ``examples/finetune/neon/``: 256 32x32 RGB PNGs (16 per mood x element class) of the procedural sprites of
  :mod:`agent.generate.sprites.dataset`, drawn with seed :data:`SEED` (the shipped model trained on seed 0), each
  recoloured role for role (background, outline, body, shade, accent) from its mood's shipped palette family into
  the mood's neon family (:func:`agent.generate.sprites.palette.to_neon`): saturated, glowing colours on deep
  backgrounds, a style the shipped model never draws (:func:`~agent.generate.sprites.quality.neon_adherence` 1.0
  here, ~0.03 on its samples); same body plans and faces. Plus ``labels.jsonl`` with each image's traits.
- ``examples/finetune/lore/lore.jsonl``: 100 traits -> lore pairs in one distinct voice (a ship's log: first person
  plural, present tense, nautical, two sentences each), hand-written, over the 16 classes.

Same code -> same pixels -> same files: the PNGs are written by Pillow with no metadata (their bytes also depend on
the zlib build, so the committed files, not a regeneration, are the reference; the tests pin their root).

Usage: ``python scripts/make_example_datasets.py [OUT]`` (OUT defaults to examples/finetune).
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

SEED = 1015
"""Seed of the example sprites (the shipped model's training data is seed 0)."""

PER_CLASS = 16

LORE: dict[tuple[str, str], tuple[str, ...]] = {
    ("serene", "fire"): (
        "We keep a small flame in the binnacle lamp and it burns without a flicker through the middle watch. "
        "The helmsman hums low and we hold our course by its steady glow.",
        "Embers drift from the galley stove like slow gulls, and none of us hurries to stamp them out. We trim "
        "the sails by hearth-light and the sea lies flat as a chart table.",
        "We anchor in a cove where a fire spirit dozes on the shingle, warm as a banked coal. The bosun lays "
        "down his pipe beside it and we all sleep easy tonight.",
        "A lantern creature rides our bowsprit, its light soft as tallow on calm water. We sound the depths by "
        "its glow and find the channel clear.",
        "Our caulkers heat their pitch over a quiet blaze that asks nothing of the wind. We mend the seams "
        "slowly, and the hull drinks the warmth like a sailor drinks grog.",
        "The evening watch finds the flame-sprite curled in the coil of the anchor chain. We leave it be, and by "
        "dawn the iron is dry and the deck smells of cedar smoke.",
    ),
    ("serene", "water"): (
        "We drift on a glassy swell and a round water spirit floats alongside, fins barely stirring. The log "
        "line pays out slow and we reckon no need for haste.",
        "The tide turns gently under our keel and we let it carry us past the sleeping reef. Our little "
        "sea-sprite dozes in the rain barrel, and no one dares to draw a cup.",
        "We lower the jolly boat into water so clear we count the shells on the bottom. The droplet-crowned "
        "creature paddles ahead to show us the shallows.",
        "Fog lifts off a sea as smooth as a mirror and we coil down every line in silence. A spirit of the "
        "shallows surfaces, blinks once, and sinks back to its kelp.",
        "We fill our casks at a spring that rises out of the open ocean, sweet and cold. The ship's cat watches "
        "the fin-child splash there and does not hiss.",
        "Rain falls soft on the quarterdeck and we hold out our tin mugs to catch it. Below the waterline "
        "something round and patient hums us toward harbour.",
        "The moon lays a silver road across the bay and we row along it without a sound. A round sea spirit "
        "swims beneath the oars, keeping time.",
    ),
    ("serene", "earth"): (
        "We beach the ship on a shingle bar and a stone-backed creature plods out to greet us. It kneels by the "
        "keel as we scrape the barnacles, patient as a bollard.",
        "Ballast stones shift in the hold and we find one has grown legs and a crystal crown. We name it Mate "
        "and it sits quiet through every watch.",
        "We moor beside an island that breathes slow, green moss rising and falling on its back. The cook picks "
        "herbs from its shoulder and it does not mind.",
        "The anchor bites into a seabed of warm clay and holds us fast all night. We sleep below while a horned "
        "little boulder keeps the deck like a lighthouse keeper.",
        "We sound twenty fathoms and bring up a pebble that smiles at us from the lead. We set it on the chart "
        "table and our reckoning comes out true for a week.",
        "Our carpenter carves a new cleat and the timber remembers the hillside it grew on. We hear it sigh "
        "contentedly whenever we make fast a line.",
    ),
    ("serene", "air"): (
        "A light breeze fills the topsails and a winged sprite rides it, folding its feathers as if asleep. We "
        "barely touch the helm all afternoon.",
        "We hang our washing in the rigging and a small air spirit dries it with slow wingbeats. The bosun "
        "thanks it with a biscuit and it accepts with a bow.",
        "The wind backs gently to the west and we follow it with no complaint. A tufted creature perches on the "
        "crow's nest and points out the clouds worth chasing.",
        "We fly every stitch of canvas in a breeze soft as a sigh. Our feathered lookout calls no warnings, only "
        "the names of passing birds.",
        "Dawn comes pink and windless until a little spirit yawns and the pennant lifts. We weigh anchor then, "
        "in no great hurry, and glide out past the point.",
        "Gulls drift overhead in long calm circles and one of them is not a gull at all. It lands on the boom, "
        "tucks its beak under a wing, and we steer around its dreams.",
    ),
    ("radiant", "fire"): (
        "Sunrise sets the sea ablaze and a flame-crowned creature dances on our foredeck. We cheer it on, and "
        "the whole crew sings the capstan shanty twice through.",
        "We light the signal fires on the headland and the spirit in them leaps for joy. Every ship in the bay "
        "answers with a lantern, and tonight the harbour is a festival.",
        "The galley stove roars gold and we feast on fresh mackerel charred at the edges. The fire-sprite winks "
        "from the grate and we toast it with our grog.",
        "We sail into a sunset so bright the pitch in the seams glows like honey. The little blaze on our bow "
        "grins wide and throws sparks like confetti.",
        "Our figurehead catches fire at noon and it burns without consuming the wood. We take it as a fair omen "
        "and crowd on sail toward the treasure coast.",
        "Bonfires of driftwood pop on the beach where we careen the hull. A joyful ember-creature skips between "
        "them and lights our pipes for free.",
        "We reach port on midsummer night and every hearth ashore blazes in welcome. Our flame-sprite leaps from "
        "the masthead lantern to the quay and back again, shining with pride.",
    ),
    ("radiant", "water"): (
        "Dolphins race us into the lagoon and a bright water spirit rides the bow wave with them. We laugh like "
        "children and the helmsman forgets his sour temper.",
        "The sea turns turquoise and gold under a high sun, and we dive from the yardarm for sheer delight. A "
        "finned little creature splashes us back every time.",
        "We find a reef where the spray sparkles like coins thrown in the air. Our sea-sprite blows bubbles at "
        "the crew and we dub it quartermaster of mirth.",
        "Rain and sun come together and a rainbow plants its foot on our quarterdeck. The droplet-crowned "
        "creature sings under it and we join the chorus.",
        "We hoist the catch aboard and the nets shine with silver and golden fish. The water spirit in the bilge "
        "claps its fins and the pumps run sweet for once.",
        "A warm current carries us faster than any wind could, and we ride it singing. Bright eyes watch us from "
        "every wave crest and we wave back.",
    ),
    ("radiant", "earth"): (
        "We strike land at last and a gem-crowned creature tumbles down the beach to meet us. The crew kisses "
        "the sand and it laughs with a sound like pebbles in a bucket.",
        "Our anchor comes up crusted with garnets and we all declare ourselves rich men. The little stone spirit "
        "on the fluke grins as if the jest were its own.",
        "We careen the ship on golden sand and the island hums a merry tune beneath us. A horned boulder brings "
        "us coconuts and refuses any payment but a song.",
        "The quarry cliffs glitter in the morning light and we row toward them cheering. A sturdy creature waves "
        "a crystal horn from the top like a harbour flag.",
        "We trade our salt for amber in a port built on the back of a smiling giant. Its belly plate shines like "
        "a polished bell, and the market rings with laughter.",
        "Ballast of bright quartz steadies us in the swell and the hold glows at night. We read the log by its "
        "light and every entry ends in a joke.",
    ),
    ("radiant", "air"): (
        "A fair wind fills every sail and a winged spirit sings in the shrouds. We reel off twelve knots and the "
        "log line cannot keep up with our cheering.",
        "Kites of sailcloth fly from our mastheads on a festival morning. A bright little air-sprite tugs each "
        "one higher and we run out of string before it tires.",
        "The trade wind finds us at dawn and we greet it like an old shipmate. A feathered creature loops around "
        "the mainmast, chirping the course to the Spice Isles.",
        "Spindrift glitters in the sun as the breeze freshens from the south. Our tufted lookout beats its wings "
        "in time with the shanty and we haul together laughing.",
        "We shake out the reefs and the ship leaps forward like a hound let off the leash. The wind spirit rides "
        "the pennant and whoops louder than the bosun.",
        "Clouds race in white parades across a sky of perfect blue. We set the studding sails, and a bright-eyed "
        "sprite dances along the yard to show us how.",
    ),
    ("fierce", "fire"): (
        "Lightning strikes the mizzen and a furious blaze climbs the rigging with teeth bared. We form a bucket "
        "line and fight it yard by yard until the sea is black around us.",
        "The enemy fires red-hot shot and we answer with our own powder and fury. A flame spirit roars on our gun "
        "deck and every cannon speaks at once.",
        "We run the gauntlet of the burning straits with pitch boiling in the seams. The ember-beast on our bow "
        "snarls at the cliffs and they fall back from us.",
        "Our cook spills the lamp oil and a wild fire-sprite leaps from the galley, brows drawn down in rage. We "
        "smother it with wet canvas and it hisses curses at us all night.",
        "We sail past a volcano spitting rock into the surf, and the sea boils around our hull. The creature in "
        "the binnacle glares at the mountain as though it knows an old enemy.",
        "The fireship drifts toward us with its spirit howling in the flames. We cut our cable and claw off the "
        "lee shore with the heat singeing our eyebrows.",
    ),
    ("fierce", "water"): (
        "A squall hits us broadside and a finned sea-devil rides the crest, fangs bared. We reef hard and lash "
        "the helm, and still the green water pours over the rail.",
        "The whirlpool drags at our keel and the water spirit at its heart glares up at us. We pull at the sweeps "
        "until our palms bleed and the current lets us go.",
        "Waves break over the forecastle as tall as the mainmast. Something round and angry thumps the hull from "
        "below, and we pump the bilges through the night.",
        "We meet a waterspout twisting off the port bow with a furious face in its spray. The gunner fires a shot "
        "through it and it collapses with a roar of salt rain.",
        "The tide rips through the narrows faster than any horse can gallop. A droplet-crowned beast snaps at our "
        "rudder and we steer by main force and oaths.",
        "Hail and spray lash us on the storm's third day and our water barrels burst their hoops. We curse the "
        "sea-sprite that follows our wake grinning with a mouth full of teeth.",
    ),
    ("fierce", "earth"): (
        "We strike a reef that moves, and a horned stone brute heaves its shoulders out of the surf. We fend off "
        "with boathooks while the hull groans like a wounded ox.",
        "Rockfall thunders from the cliffs as we work the ship through the narrow sound. A crystal-crowned "
        "creature on the ledge roars down at us and we roar right back.",
        "Our anchor fouls on a boulder that bites the chain. We heave at the capstan until the pawls scream, and "
        "the earth spirit lets go with a grinding growl.",
        "The island shakes under our shore party and we run for the boats with sand in our teeth. Behind us a "
        "blocky giant stamps its legs and the palms topple like skittles.",
        "We careen on a beach of black basalt and the ground snarls beneath the keel. The bosun swears at the "
        "rock-beast and it swears back in a voice like a landslide.",
        "Cannonballs of granite rain from the fortress walls and we answer shot for shot. A stone-armoured "
        "creature guards the breach with its horns lowered and eyes burning.",
    ),
    ("fierce", "air"): (
        "A gale screams through the rigging and a winged fury claws at our topsails. We lay aloft to furl them "
        "and the wind tries to pluck us off the yards one by one.",
        "The hurricane's eye passes over us and we see the storm spirit glaring down from the wall. We batten "
        "every hatch and lash ourselves to the pumps.",
        "Wind shears the foretopmast clean away and it falls with a crack like a musket. A feathered beast "
        "shrieks in the wreckage and we cut it loose with axes.",
        "We beat into a headwind that howls like a pack of wolves. The tufted creature on the masthead screeches "
        "its defiance, and we gain a mile by nightfall.",
        "A white squall strikes from a clear sky and lays us over on our beam ends. We claw her upright with a "
        "storm jib while the air spirit tears at the canvas with its beak.",
        "The wind veils the stars and hurls spray like shot against the deck. We shout our orders mouth to ear "
        "and the wing-beast answers with thunder.",
        "Sleet drives sideways across the deck and the rigging sings a war cry. We fight the wheel two men to a "
        "spoke while the storm-bird dives at our topmen.",
    ),
    ("gloomy", "fire"): (
        "Our last candle gutters in the cabin and the flame spirit in it sighs like a widow. We ration the tallow "
        "and write the log by touch.",
        "We pass the wreck of a burnt-out brig still smoking on the reef. A small dim ember crouches on her "
        "stern and watches us go without a word.",
        "The galley fire will not catch in the wet, and the sprite in the stove only smoulders. We eat cold "
        "biscuit and speak of home in low voices.",
        "Signal flares rise from a sinking ship far astern and fade before we can come about. The flame creature "
        "on our bow lowers its head and does not brighten all night.",
        "We burn our dead shipmate's hammock as the custom demands, and the smoke hangs low over the water. The "
        "fire sprite gives off no warmth at all, only a grey glow.",
        "Ash drifts onto the deck from some distant shore that burns beyond the horizon. We sweep it into the "
        "scuppers each morning and never learn its name.",
    ),
    ("gloomy", "water"): (
        "Fog closes in thick as wet wool and we drift without sight of sun or star. A heavy-lidded sea spirit "
        "floats astern, and the bell tolls every minute.",
        "The doldrums hold us in a sea like grey oil for the eleventh day. We watch the round water creature sink "
        "and rise beside the hull, as listless as we are.",
        "We pump the bilge at every watch and still the water rises by an inch. Something small and sorrowful "
        "swims in the hold and will not meet our eyes.",
        "Rain falls steady and cold on a sea the colour of pewter. We wring out our jackets and the "
        "droplet-crowned sprite weeps with us into the scuppers.",
        "The tide strands us on a mudflat at dusk and the water goes out without us. A finned creature lies in "
        "the last pool and sighs until morning.",
        "We cast our nets for three days and bring up only weed and bones. The sea spirit frowns from the trough "
        "of every swell and the crew grows quiet.",
    ),
    ("gloomy", "earth"): (
        "We wreck on a grey shoal and the rocks hold our keel like cold hands. A mossy stone creature sits beside "
        "the hull and mourns the timbers with us.",
        "The island we seek is only a heap of slate under low cloud. We bury the water casks there for some later "
        "crew, and a horned boulder watches with drooping eyes.",
        "Our ballast shifts in the swell and the hold groans like an old man. The earth sprite in the stones "
        "frowns, and we restow every rock by lantern light.",
        "We dig for fresh water on a barren cay and find only salt and clay. The crystal on the little golem's "
        "head dims, and we row back aboard empty-handed.",
        "A landslide has buried the harbour we know, and our chart lies to us now. We anchor off a strange, "
        "silent shore while a blocky shape slumps on the cliff.",
        "Mud clogs the anchor and the cable comes up heavy with dark silt. We scrub it in silence, and beneath us "
        "the seabed seems to sigh.",
        "We haul the longboat over a reef of dead coral, grey as old bones. A stone creature lies half-buried "
        "there, and its slow frown follows us out to sea.",
    ),
    ("gloomy", "air"): (
        "The wind dies at dusk and the sails hang like wet laundry from the yards. A small winged spirit droops "
        "on the crosstrees and will not fly.",
        "Low clouds press down on the mastheads and the air tastes of rust. We listen to the ragged wingbeats of "
        "something lost above the fog and do not call out to it.",
        "A mournful breeze moans through the shrouds all night like a drowned man singing. The tufted creature "
        "on the yard folds its feathers and hides its face.",
        "We whistle for a wind as the old hands teach us, but none comes. The air sprite on the boom only stirs a "
        "cold draught and sighs.",
        "Smoke from a far-off fire hangs in the still air for three days. Our lookout's eyes run red, and the "
        "little feathered beast coughs beside him in the crow's nest.",
        "The barometer falls and falls while the sky turns the colour of a bruise. We double the lashings, and "
        "the wind spirit mutters grim prophecies in the rigging.",
    ),
}


def png_bytes(img) -> bytes:  # type: ignore[no-untyped-def]
    """``img`` (H, W, 3) uint8 as an RGB PNG without metadata."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def neon_files() -> dict[str, bytes]:
    """Relative path -> bytes of ``neon/``: the images and labels.jsonl."""
    from agent.generate.sprites.conditioning import class_traits
    from agent.generate.sprites.dataset import make_dataset
    from agent.generate.sprites.palette import to_neon

    images, labels = make_dataset(PER_CLASS, seed=SEED)
    files: dict[str, bytes] = {}
    lines = []
    for k, (img, label) in enumerate(zip(images, labels, strict=True)):
        traits = class_traits(int(label))
        name = f"images/{traits['mood']}-{traits['element']}-{k % PER_CLASS:02d}.png"
        files[name] = png_bytes(to_neon(img, traits["mood"]))
        lines.append(json.dumps({"file": name, "traits": traits}, sort_keys=True))
    files["labels.jsonl"] = ("\n".join(sorted(lines)) + "\n").encode()
    return files


def lore_lines() -> bytes:
    """``lore.jsonl``: one line per lore entry, class by class."""
    lines = [
        json.dumps(
            {"traits": {"mood": mood, "element": element}, "lore": text}, sort_keys=True, ensure_ascii=False
        )
        for (mood, element), texts in LORE.items()
        for text in texts
    ]
    return ("\n".join(lines) + "\n").encode()


def main(out: Path) -> None:
    for name, data in neon_files().items():
        path = out / "neon" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (out / "lore").mkdir(parents=True, exist_ok=True)
    (out / "lore" / "lore.jsonl").write_bytes(lore_lines())
    pngs = sorted((out / "neon" / "images").glob("*.png"))
    print(
        f"{len(pngs)} images ({sum(p.stat().st_size for p in pngs):,} bytes) and "
        f"{sum(len(v) for v in LORE.values())} lore entries written under {out}"
    )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("examples/finetune"))
