"""A printable enclosure label: QR code (claim URL) plus gateway id and support contact.

The QR code holds the claim URL only (``<claim base>/<gateway id>``): no secret, nothing that
grants access by itself. Output is PNG or PDF (Pillow), sized for a 62 mm label printer at
300 dpi by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import qrcode
from PIL import Image, ImageDraw, ImageFont
from qrcode.constants import ERROR_CORRECT_M

DPI = 300


@dataclass(frozen=True, slots=True)
class LabelSpec:
    gateway_id: str
    claim_url: str
    support: str = ""
    title: str = "duet-edge gateway"
    box_size: int = 8  # pixels per QR module
    border: int = 4  # quiet zone in modules (the QR standard asks for 4)


def claim_url(base: str, gateway_id: str) -> str:
    return f"{base.rstrip('/')}/{gateway_id}"


def qr_matrix(data: str) -> list[list[bool]]:
    """The QR module matrix (without quiet zone) the label draws for ``data``."""
    qr = _qr(data, border=0, box_size=1)
    return [list(row) for row in qr.get_matrix()]


def _qr(data: str, border: int, box_size: int) -> qrcode.QRCode:
    qr = qrcode.QRCode(error_correction=ERROR_CORRECT_M, box_size=box_size, border=border)
    qr.add_data(data)
    qr.make(fit=True)
    return qr


def render_label(spec: LabelSpec) -> Image.Image:
    """The label as an RGB image: QR code on the left, text on the right."""
    qr = _qr(spec.claim_url, border=spec.border, box_size=spec.box_size)
    qr_img = qr.make_image(fill_color="black", back_color="white").get_image().convert("RGB")
    side = qr_img.size[0]
    lines = [(spec.title, 34), (spec.gateway_id, 44), (spec.claim_url, 24)]
    if spec.support:
        lines.append((f"Support: {spec.support}", 24))
    fonts = [(text, ImageFont.load_default(size=size)) for text, size in lines]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = max(int(probe.textlength(text, font=font)) for text, font in fonts)
    width = side + text_w + 3 * spec.box_size * 2
    label = Image.new("RGB", (width, side), "white")
    label.paste(qr_img, (0, 0))
    draw = ImageDraw.Draw(label)
    y = spec.box_size * spec.border
    for (text, font), (_, size) in zip(fonts, lines, strict=True):
        draw.text((side + spec.box_size * 2, y), text, fill="black", font=font)
        y += int(size * 1.5)
    return label


def write_label(spec: LabelSpec, out: Path) -> Path:
    """Write PNG or PDF, chosen by the file extension."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in (".png", ".pdf"):
        raise ValueError(f"label file must end in .png or .pdf, got {out.name!r}")
    image = render_label(spec)
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".pdf":
        image.save(out, "PDF", resolution=DPI)
    else:
        image.save(out, "PNG", dpi=(DPI, DPI))
    return out
