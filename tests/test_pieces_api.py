"""Several pieces in one photo through the API and the CLI (issue 14): the answer lists the
pieces found, searches the first unless asked for another (`piece`), a crop wins over pieces, a
piece the photo lacks is a clear error, and `recommend --all-pieces` answers each piece."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from set_photo import SET_TYPES, set_photo

from jewelrec import recommend
from jewelrec.cli import main
from jewelrec.imaging.io import load_image
from jewelrec.models.pieces import find_pieces, iou
from jewelrec.recommend import PieceError, Recommender, infer
from jewelrec.server.app import create_app


@pytest.fixture(scope="module")
def client(tiny_home):
    with TestClient(create_app(tiny_home)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def the_set(tiny_catalog) -> tuple[bytes, list]:
    return set_photo(tiny_catalog)


@pytest.fixture(scope="module")
def set_file(the_set, tmp_path_factory):
    path = tmp_path_factory.mktemp("set") / "set.png"
    path.write_bytes(the_set[0])
    return path


def post(client, photo: bytes, **fields):
    data = {k: str(v) for k, v in fields.items()}
    return client.post("/api/recommend", files={"photo": ("set.png", photo, "image/png")},
                       data=data)


def index_of(pieces: list[dict], ptype: str) -> int:
    return next(i for i, p in enumerate(pieces) if p["type"] == ptype)


# -- the API ---------------------------------------------------------------------------------------
def test_the_answer_lists_each_piece_of_a_set_and_searches_the_first(client, the_set):
    photo, laid = the_set
    answer = post(client, photo, k=4).json()
    pieces = answer["pieces"]
    width, height = Image.open(io.BytesIO(photo)).size
    assert len(pieces) == len(SET_TYPES)
    for piece in pieces:
        assert set(piece) == {"box", "type", "confidence"}
        x0, y0, x1, y1 = piece["box"]
        assert all(isinstance(v, int) for v in piece["box"])
        assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
        assert 0 < piece["confidence"] <= 1
    # each laid piece is found where it lies, with its type
    for ptype, box in laid:
        found = pieces[index_of(pieces, ptype)]
        assert iou(found["box"], box) >= 0.5, (ptype, found, box)
    # the first piece is the one searched: its box, its type, results of that type
    assert answer["piece"] == 0
    assert answer["crop"] == pieces[0]["box"]
    assert answer["type"] == pieces[0]["type"] and answer["searched_types"] == [answer["type"]]
    assert {r["type"] for r in answer["results"]} == {pieces[0]["type"]}


def test_piece_i_searches_that_piece(client, the_set):
    photo, _ = the_set
    first = post(client, photo, k=4).json()
    for i, piece in enumerate(first["pieces"]):
        answer = post(client, photo, k=4, piece=i).json()
        assert answer["piece"] == i
        assert answer["pieces"] == first["pieces"]  # found once per photo, the same each time
        assert answer["crop"] == piece["box"]
        assert answer["type"] == piece["type"]
        assert answer["results"] and {r["type"] for r in answer["results"]} == {piece["type"]}
    other = post(client, photo, k=4, piece=1).json()
    assert {r["id"] for r in other["results"]}.isdisjoint({r["id"] for r in first["results"]})


def test_a_crop_wins_over_pieces_which_are_still_listed(client, the_set):
    photo, _ = the_set
    answer = post(client, photo, k=3, piece=1, crop="0,0,280,256").json()
    assert answer["crop"] == [0, 0, 280, 256]
    assert answer["piece"] is None
    assert len(answer["pieces"]) == len(SET_TYPES)


@pytest.mark.parametrize("piece", ["2", "3", "-1", "99", "one", "1.5"])
def test_a_piece_the_photo_lacks_is_a_clear_422(client, the_set, piece):
    photo, _ = the_set
    response = post(client, photo, piece=piece)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert "piece" in detail and "Traceback" not in detail
    if piece in ("2", "3"):  # in the schema's range, but this photo has two pieces
        assert detail == f"piece {piece}: the photo has no such piece; it has 2 (0 to 1)"


def test_a_photo_of_one_piece_is_answered_as_before(client, tiny_query_photo):
    """One piece found: the framing, the type and the results are those of the pipeline without
    piece finding (no regression of single-piece photos); `piece=0` is that same answer."""
    answer = post(client, tiny_query_photo, k=5).json()
    assert len(answer["pieces"]) == 1 and answer["piece"] == 0
    assert post(client, tiny_query_photo, k=5, piece=0).json()["results"] == answer["results"]
    recommender = client.app.state.shop.recommender
    snap = recommender.snapshot
    prepared = recommender.prepare(tiny_query_photo, pieces=False)
    inferred = infer(snap, [prepared])[0]
    before = recommender._answer(snap, prepared, inferred, k=5, filters=None, type=None,
                                 known=None, group_variants=False).to_dict()
    assert before["pieces"] == [] and before["piece"] is None
    assert answer["type"] == before["type"]
    assert [r["id"] for r in answer["results"]] == [r["id"] for r in before["results"]]
    box = inferred.framing.box
    assert answer["crop"] == (list(box.as_tuple()) if box else None)


def test_more_like_this_lists_no_pieces(client):
    product = client.app.state.shop.recommender.store.all_products()[0]
    answer = client.get(f"/api/products/{product.id}/similar", params={"k": 2}).json()
    assert answer["pieces"] == [] and answer["piece"] is None


def test_the_schema_documents_pieces_and_piece(client):
    spec = client.get("/openapi.json").json()
    recommendation = spec["components"]["schemas"]["Recommendation"]["properties"]
    assert {"pieces", "piece"} <= set(recommendation)
    assert set(spec["components"]["schemas"]["Piece"]["properties"]) == {
        "box", "type", "confidence"}
    body = spec["paths"]["/api/recommend"]["post"]["requestBody"]["content"]
    form = next(iter(body.values()))["schema"]["$ref"].rsplit("/", 1)[-1]
    assert "piece" in spec["components"]["schemas"][form]["properties"]


# -- the Recommender -------------------------------------------------------------------------------
def test_all_pieces_finds_them_once_and_answers_each(tiny_home, set_file, monkeypatch):
    recommender = Recommender.open(tiny_home)
    calls = []
    monkeypatch.setattr(recommend, "find_pieces",
                        lambda *a, **kw: calls.append(1) or find_pieces(*a, **kw))
    answers = recommender.recommend_pieces(set_file, k=3)
    assert len(calls) == 1
    assert [a.piece for a in answers] == list(range(len(answers)))
    assert sorted(a.type for a in answers) == sorted(SET_TYPES)
    for a in answers:
        assert a.pieces == answers[0].pieces and a.crop.as_tuple() == a.pieces[a.piece].box
        assert {r.type for r in a.results} == {a.type}
    with pytest.raises(PieceError, match="piece 5: the photo has no such piece; it has 2"):
        recommender.recommend(set_file, piece=5)
    with pytest.raises(PieceError, match="piece -1: pieces are numbered from 0"):
        recommender.recommend(set_file, piece=-1)


def count_backbone_images(recommender: Recommender, monkeypatch) -> list[int]:
    """Images through the snapshot's backbone, call by call (its feature memory answers the
    rest)."""
    backbone = recommender.snapshot.classifier.backbone
    assert backbone is recommender.snapshot.embedder.backbone
    run, counts = backbone.run, []

    def counted(batch):
        counts.append(len(batch))
        return run(batch)

    monkeypatch.setattr(backbone, "run", counted)
    return counts


def noisy(photo: bytes, seed: int) -> np.ndarray:
    """The photo with its lowest bit randomised: the same to see, new to the feature memory."""
    image = load_image(photo)
    return image ^ np.random.default_rng(seed).integers(0, 2, image.shape, dtype=np.uint8)


def test_finding_the_piece_of_a_one_piece_photo_costs_no_backbone_pass(
        tiny_home, tiny_query_photo, monkeypatch):
    """The piece finder types a lone piece on the very pixels the query types: the query then
    runs the backbone on exactly the images a query without piece finding runs."""
    recommender = Recommender.open(tiny_home)
    snap = recommender.snapshot
    counts = count_backbone_images(recommender, monkeypatch)
    answer = recommender.recommend(noisy(tiny_query_photo, 1), k=3)
    assert len(answer.pieces) == 1
    with_pieces, counts[:] = sum(counts), []
    prepared = recommender.prepare(noisy(tiny_query_photo, 2), pieces=False)
    infer(snap, [prepared])
    assert with_pieces == sum(counts) > 0


def test_a_query_segments_its_photo_once_and_frames_it_as_before(
        tiny_home, tiny_query_photo, monkeypatch):
    """The piece finder and the framing share one segmentation of the photo (it was computed
    twice); the framing it gives is the one computed on its own."""
    from jewelrec.imaging import focus, segment

    recommender = Recommender.open(tiny_home)
    photo = noisy(tiny_query_photo, 3)
    prepared = recommender.prepare(photo)
    calls = []
    original = segment.objects_and_mask

    def counted(img, *args, **kwargs):
        calls.append(img.shape)
        return original(img, *args, **kwargs)

    monkeypatch.setattr(segment, "objects_and_mask", counted)
    monkeypatch.setattr(focus, "objects_and_mask", counted)
    framing = recommend.frame(recommender.snapshot, prepared)
    assert len(calls) == 1 and len(framing.pieces) == 1
    alone = focus.frame_piece(prepared.image)
    assert framing.box == alone.box and np.array_equal(framing.focused, alone.image)
    assert np.array_equal(framing.mask, alone.mask)


def test_a_piece_of_a_set_is_typed_once_where_the_finder_typed_it(
        tiny_home, the_set, monkeypatch):
    """The query types the chosen piece on the pixels the piece finder typed it on: the answer's
    type is the piece's, and the backbone sees only the finder's crops and the embedder's."""
    recommender = Recommender.open(tiny_home)
    snap = recommender.snapshot
    counts = count_backbone_images(recommender, monkeypatch)
    photo = noisy(the_set[0], 3)
    pieces = find_pieces(photo, snap.classifier)
    finder = sum(counts)
    for piece in range(len(pieces)):
        prepared = recommender.prepare(photo, piece=piece)
        counts[:] = []
        inferred = infer(snap, [prepared])[0]
        assert inferred.framing.pieces == tuple(pieces)
        assert sum(counts) == 1  # the embedder's view of the piece; its typing is remembered
        best = int(np.argmax(inferred.probabilities))
        assert snap.classifier.classes[best] == pieces[piece].type
        assert float(inferred.probabilities[best]) == pytest.approx(pieces[piece].confidence)
    assert finder >= len(pieces)


def test_a_photo_without_a_clear_piece_still_lists_one(tiny_home):
    noise = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    answer = Recommender.open(tiny_home).recommend(noise, k=2)
    assert len(answer.pieces) == 1 and answer.piece == 0
    assert answer.to_dict()["pieces"][0]["box"] == [0, 0, 160, 120]


# -- the CLI ---------------------------------------------------------------------------------------
def test_cli_json_lists_pieces_and_piece_chooses_one(tiny_home, set_file, capsys):
    assert main(["recommend", str(set_file), "--home", str(tiny_home), "--json", "-k", "3"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["piece"] == 0 and len(first["pieces"]) == len(SET_TYPES)
    assert main(["recommend", str(set_file), "--home", str(tiny_home), "--json", "-k", "3",
                 "--piece", "1"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["piece"] == 1 and second["type"] == first["pieces"][1]["type"]
    assert second["type"] != first["type"]


def test_cli_all_pieces_json_is_one_list_of_answers_per_photo(tiny_home, set_file, capsys):
    photo = load_image(set_file)
    assert photo.shape[2] == 3
    assert main(["recommend", str(set_file), "--home", str(tiny_home), "--json", "-k", "2",
                 "--all-pieces"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1  # one photo: one line
    answers = json.loads(lines[0])
    assert isinstance(answers, list) and len(answers) == len(SET_TYPES)
    assert [a["piece"] for a in answers] == [0, 1]
    for a in answers:
        assert a["pieces"] == answers[0]["pieces"]
        assert a["type"] == a["pieces"][a["piece"]]["type"]
        assert {r["type"] for r in a["results"]} == {a["type"]}


def test_cli_all_pieces_text_has_one_section_per_piece(tiny_home, set_file, capsys):
    assert main(["recommend", str(set_file), "--home", str(tiny_home), "-k", "2",
                 "--all-pieces"]) == 0
    out = capsys.readouterr().out
    assert out.count(f"{set_file}: ") == len(SET_TYPES)
    assert "searched piece 0: " in out and "searched piece 1: " in out


def test_cli_bad_piece_is_a_message_not_a_traceback(tiny_home, set_file, capsys):
    assert main(["recommend", str(set_file), "--home", str(tiny_home), "--piece", "7"]) == 1
    err = capsys.readouterr().err
    assert "piece 7: the photo has no such piece; it has 2" in err and "Traceback" not in err
    assert main(["recommend", str(set_file), "--home", str(tiny_home), "--piece", "-1"]) == 2
    assert "--piece -1" in capsys.readouterr().err
    assert main(["recommend", str(set_file), "--home", str(tiny_home), "--all-pieces",
                 "--crop", "0,0,10,10"]) == 2
    assert "choose one" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:  # argparse: one or the other
        main(["recommend", str(set_file), "--home", str(tiny_home), "--all-pieces",
              "--piece", "1"])
    assert exc.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


def test_cli_all_pieces_html_has_one_section_per_piece(tiny_home, set_file, tmp_path, capsys):
    out = tmp_path / "pieces.html"
    assert main(["recommend", str(set_file), "--home", str(tiny_home), "-k", "2",
                 "--all-pieces", "--html", str(out)]) == 0
    capsys.readouterr()
    page = out.read_text()
    assert page.count("<section>") == len(SET_TYPES)
    assert "piece 1 of 2: " in page and "piece 2 of 2: " in page
