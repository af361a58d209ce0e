"""Write the handwriting evaluation set: digits in handwriting fonts and mouse strokes, made to look
like marker, pen, pencil, low-resolution scans, blurred and JPEG-damaged pictures and phone photos.

Nothing here comes from MNIST: the shapes are Debian's handwriting fonts (FONTS, installed by
`make system-deps`) and strokes drawn from the templates in `strokes.py`. Everything is drawn from
one seeded random generator, so the same seed writes the same files, byte for byte, with the same
Pillow. Each picture is a file `predict` reads; `labels.csv` gives its label, style and writer.
"""

import csv
import dataclasses
import io
import pathlib

import numpy as np

from handwriting import strokes

FONT_DIRECTORY = pathlib.Path("/usr/share/fonts")
# Debian package → its font files (under FONT_DIRECTORY) whose digits look handwritten. Each file is
# one "writer". Left out: fonts whose digits are outlines (fonts-femkeklaver) or missing.
FONTS = {
    "fonts-dkg-handwriting": ["truetype/fifthhorseman/dkg.ttf", "truetype/fifthhorseman/dkgBd.ttf"],
    "fonts-breip": ["truetype/breip/Breip.ttf", "truetype/breip/breipfont.ttf"],
    "fonts-rufscript": ["truetype/rufscript/Rufscript010.ttf"],
    "fonts-sjfonts": ["truetype/sjfonts/Delphine.ttf", "truetype/sjfonts/SteveHand.ttf"],
    "fonts-comic-neue": ["opentype/comic-neue/ComicNeue-Regular.otf", "opentype/comic-neue/ComicNeue-Light.otf"],
    "fonts-bwht": [f"opentype/bwht/BecauseWe{name}-Regular.otf"
                   for name in ("Build", "Connect", "Create", "Learn", "Mentor", "Organize")],
    "fonts-humor-sans": ["truetype/humor-sans/Humor-Sans.ttf"],
    "fonts-klee": ["truetype/klee/KleeOne-Regular.ttf"],
    "fonts-kristi": ["truetype/kristi/Kristi.ttf"],
    "fonts-dancingscript": ["opentype/dancingscript/DancingScript-Regular.otf"],
    "fonts-kaushanscript": ["opentype/kaushanscript/KaushanScript-Regular.otf"],
    "fonts-yusei-magic": ["truetype/yusei-magic/YuseiMagic-Regular.ttf"],
    "fonts-tlwg-purisa-otf": ["opentype/tlwg/Purisa.otf", "opentype/tlwg/Purisa-Oblique.otf"],
    "fonts-kiloji": ["truetype/kiloji/kiloji.ttf", "truetype/kiloji/kiloji_d.ttf"],
    "fonts-tomsontalks": ["truetype/tomsontalks/TomsonTalks.ttf"],
    "fonts-seto": ["truetype/seto/setofont.ttf"],
}
STYLES = ("marker", "pen", "pencil", "scan", "blur", "jpeg", "photo", "mouse")
DEFAULT_SEED = 2024
DEFAULT_PER_DIGIT = 12  # pictures of each digit in each style, each by a different writer where possible
LABELS_FILE = "labels.csv"


@dataclasses.dataclass(frozen=True)
class Sample:
    """One written file: its path relative to the set's directory, its digit, style and writer."""

    file: str
    label: int
    style: str
    writer: str


def font_paths():
    """Every font file of FONTS, checked to exist. Raises: FileNotFoundError naming the missing package."""
    paths = []
    for package, files in FONTS.items():
        for relative in files:
            path = FONT_DIRECTORY / relative
            if not path.is_file():
                raise FileNotFoundError(f"{path}: missing; install the Debian package {package} (make system-deps)")
            paths.append(path)
    return paths


def render_glyph(font_path, digit, height):
    """The digit in that font as ink coverage, float32 in [0, 1], cropped to the ink, about `height` tall."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(font_path), size=int(height * 1.6))
    canvas = Image.new("L", (int(height * 3), int(height * 3)), 0)
    ImageDraw.Draw(canvas).text((canvas.width // 2, canvas.height // 2), str(digit), font=font, fill=255, anchor="mm")
    box = canvas.getbbox()
    if box is None:
        raise ValueError(f"{font_path}: has no glyph for the digit {digit}")
    glyph = canvas.crop(box)
    scale = height / glyph.height  # fonts differ in digit height: bring every writer to the size asked for
    glyph = glyph.resize((max(1, round(glyph.width * scale)), max(1, round(height))), Image.LANCZOS)
    return np.asarray(glyph, dtype=np.float32) / 255


def change_thickness(ink, pixels):
    """Thicken (pixels > 0) or thin (pixels < 0) the strokes by about `pixels` on each side."""
    from PIL import Image, ImageFilter

    if pixels == 0:
        return ink
    image = Image.fromarray((ink * 255).astype(np.uint8))
    image = image.filter(ImageFilter.MaxFilter(2 * pixels + 1) if pixels > 0 else ImageFilter.MinFilter(-2 * pixels + 1))
    return np.asarray(image, dtype=np.float32) / 255


def tilt(ink, rng, degrees=8.0, shear=0.15):
    """Rotate and slant the ink a little, as people write."""
    from PIL import Image

    image = Image.fromarray((ink * 255).astype(np.uint8))
    slant = rng.uniform(-shear, shear)
    width = image.width + int(abs(slant) * image.height) + 2
    offset = -slant * image.height if slant > 0 else 0.0
    image = image.transform((width, image.height), Image.AFFINE, (1, slant, offset, 0, 1, 0), Image.BICUBIC)
    image = image.rotate(rng.uniform(-degrees, degrees), Image.BICUBIC, expand=True)
    image = image.crop(image.getbbox())
    return np.asarray(image, dtype=np.float32) / 255


def place(ink, canvas_shape, rng, margin=0.1):
    """Put the ink somewhere on a blank canvas (not necessarily in the middle)."""
    canvas = np.zeros(canvas_shape, dtype=np.float32)
    height, width = ink.shape
    room_rows, room_columns = canvas_shape[0] - height, canvas_shape[1] - width
    if room_rows < 0 or room_columns < 0:
        raise ValueError(f"ink {ink.shape} does not fit the canvas {canvas_shape}")
    low_row, low_column = int(room_rows * margin), int(room_columns * margin)
    top = int(rng.integers(low_row, room_rows - low_row + 1))
    left = int(rng.integers(low_column, room_columns - low_column + 1))
    canvas[top : top + height, left : left + width] = ink
    return canvas


def blur(array, radius):
    from PIL import Image, ImageFilter

    image = Image.fromarray(np.clip(array * 255, 0, 255).astype(np.uint8))
    return np.asarray(image.filter(ImageFilter.GaussianBlur(radius)), dtype=np.float32) / 255


def on_paper(ink, paper, ink_level, rng, noise):
    """Grey picture of ink coverage on paper: paper level where there is no ink, `ink_level` under full ink."""
    picture = paper - (paper - ink_level) * ink + rng.normal(0.0, noise, ink.shape)
    return np.clip(picture, 0.0, 1.0)


def to_uint8(array):
    return (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8)


def encode(image, suffix, **options):
    buffer = io.BytesIO()
    image.save(buffer, format={".png": "PNG", ".jpg": "JPEG"}[suffix], **options)
    return buffer.getvalue()


def pgm_bytes(gray):
    height, width = gray.shape
    return b"P5\n%d %d\n255\n" % (width, height) + gray.tobytes()


# Each style takes (ink source, rng) and returns (file bytes, suffix). The ink source is a function
# height → ink coverage, so that each style draws the writer's digit at the size it needs.

def marker(glyph, rng):
    from PIL import Image

    ink = tilt(change_thickness(glyph(int(rng.integers(120, 200))), int(rng.integers(4, 9))), rng)
    canvas = place(ink, (int(ink.shape[0] * rng.uniform(1.3, 1.8)), int(ink.shape[1] * rng.uniform(1.4, 2.6))), rng)
    picture = on_paper(canvas, rng.uniform(0.88, 1.0), rng.uniform(0.0, 0.12), rng, noise=0.01)
    return encode(Image.fromarray(to_uint8(picture)), ".png"), ".png"


def pen(glyph, rng):
    """Thin blue or black ballpoint on white paper, a colour PNG."""
    from PIL import Image

    ink = tilt(change_thickness(glyph(int(rng.integers(150, 260))), -int(rng.integers(0, 3))), rng)
    canvas = place(ink, (int(ink.shape[0] * rng.uniform(1.2, 1.8)), int(ink.shape[1] * rng.uniform(1.5, 3.0))), rng)
    paper = np.array([0.97, 0.97, 0.95]) * rng.uniform(0.9, 1.0)
    colour = np.array([0.1, 0.15, 0.55]) if rng.random() < 0.6 else np.array([0.1, 0.1, 0.12])
    picture = paper - (paper - colour) * canvas[..., None] + rng.normal(0.0, 0.01, (*canvas.shape, 3))
    return encode(Image.fromarray(to_uint8(picture)), ".png"), ".png"


def pencil(glyph, rng):
    """Grey graphite with a grain: the stroke has gaps and lighter streaks; the paper has a texture."""
    from PIL import Image

    ink = tilt(change_thickness(glyph(int(rng.integers(120, 220))), int(rng.integers(-1, 2))), rng)
    canvas = place(ink, (int(ink.shape[0] * rng.uniform(1.3, 1.9)), int(ink.shape[1] * rng.uniform(1.5, 2.8))), rng)
    grain = np.clip(rng.uniform(0.55, 0.8) + 0.45 * (blur(rng.random(canvas.shape), 0.8) - 0.5) * 4, 0.0, 1.0)
    paper_texture = 0.02 * (blur(rng.random(canvas.shape), 1.5) - 0.5) * 4
    picture = on_paper(canvas * grain, rng.uniform(0.85, 0.97), rng.uniform(0.3, 0.55), rng, noise=0.012)
    return encode(Image.fromarray(to_uint8(picture + paper_texture)), ".png"), ".png"


def scan(glyph, rng):
    """A low-resolution scan: the digit 16 to 30 pixels tall, thick strokes, blurred, a grey PGM."""
    from PIL import Image

    ink = tilt(change_thickness(glyph(120), int(rng.integers(3, 8))), rng)
    height = int(rng.integers(16, 31))
    small = Image.fromarray(to_uint8(blur(ink, rng.uniform(2.0, 5.0))))
    small = small.resize((max(1, round(small.width * height / small.height)), height), Image.BILINEAR)
    ink = np.asarray(small, dtype=np.float32) / 255
    canvas = place(ink, (height + int(rng.integers(4, 14)), ink.shape[1] + int(rng.integers(4, 16))), rng, margin=0.2)
    picture = on_paper(blur(canvas, rng.uniform(0.4, 1.0)), rng.uniform(0.75, 0.95), rng.uniform(0.05, 0.3), rng, 0.015)
    return pgm_bytes(to_uint8(picture)), ".pgm"


def blurred(glyph, rng):
    """Out of focus: a strong Gaussian blur."""
    from PIL import Image

    ink = tilt(change_thickness(glyph(int(rng.integers(80, 150))), int(rng.integers(0, 4))), rng)
    canvas = place(ink, (int(ink.shape[0] * 1.8), int(ink.shape[1] * rng.uniform(1.8, 2.6))), rng, margin=0.3)
    picture = on_paper(blur(canvas, rng.uniform(2.5, 7.0)), rng.uniform(0.85, 1.0), rng.uniform(0.0, 0.2), rng, 0.01)
    return encode(Image.fromarray(to_uint8(picture)), ".png"), ".png"


def jpeg(glyph, rng):
    """Small and compressed hard: blocks and ringing around the strokes."""
    from PIL import Image

    ink = tilt(change_thickness(glyph(int(rng.integers(40, 110))), int(rng.integers(0, 3))), rng)
    canvas = place(ink, (int(ink.shape[0] * rng.uniform(1.3, 2.0)), int(ink.shape[1] * rng.uniform(1.5, 2.8))), rng)
    picture = on_paper(canvas, rng.uniform(0.8, 1.0), rng.uniform(0.0, 0.25), rng, 0.02)
    return encode(Image.fromarray(to_uint8(picture)), ".jpg", quality=int(rng.integers(5, 25))), ".jpg"


def photo(glyph, rng):
    """A phone photo of a digit on a sheet: light falling off across the page, a soft shadow, the page
    seen at an angle (perspective), sensor noise, a colour cast; JPEG or PNG."""
    from PIL import Image

    height, width = (600, 800) if rng.random() < 0.5 else (800, 600)
    ink = tilt(change_thickness(glyph(int(rng.integers(140, 320))), int(rng.integers(1, 7))), rng)
    canvas = Image.fromarray(to_uint8(place(ink, (height, width), rng, margin=0.2)))
    # Keystone: the page's far edge looks narrower than its near edge.
    squeeze = rng.uniform(0.0, 0.25) * width
    coefficients = perspective_coefficients(
        [(0, 0), (width, 0), (width, height), (0, height)],
        [(squeeze, 0), (width - squeeze, 0), (width, height), (0, height)],
    )
    ink = np.asarray(canvas.transform((width, height), Image.PERSPECTIVE, coefficients, Image.BICUBIC), np.float32) / 255
    rows, columns = np.mgrid[0:height, 0:width].astype(np.float32)
    light = (rng.uniform(0.75, 1.0) + rng.uniform(-0.25, 0.25) * columns / width + rng.uniform(-0.2, 0.2) * rows / height)
    # A soft shadow (a hand, the phone) over one side of the page.
    angle = rng.uniform(0, 2 * np.pi)
    distance = (columns - width / 2) * np.cos(angle) + (rows - height / 2) * np.sin(angle) - rng.uniform(0.15, 0.5) * width
    shade = 1.0 - rng.uniform(0.25, 0.5) / (1.0 + np.exp(-distance / rng.uniform(15, 60)))
    reflectance = 0.92 - (0.92 - rng.uniform(0.04, 0.2)) * ink
    tint = np.array([1.0, rng.uniform(0.92, 1.0), rng.uniform(0.78, 0.95)])  # warm indoor light
    picture = (reflectance * light * shade)[..., None] * tint + rng.normal(0.0, rng.uniform(0.01, 0.03), (height, width, 3))
    image = Image.fromarray(to_uint8(picture))
    if rng.random() < 0.7:
        return encode(image, ".jpg", quality=int(rng.integers(60, 92))), ".jpg"
    return encode(image, ".png"), ".png"


def perspective_coefficients(source, target):
    """Pillow's PERSPECTIVE data mapping output points `target` back to input points `source`."""
    matrix, vector = [], []
    for (x, y), (u, v) in zip(source, target):
        matrix.append([u, v, 1, 0, 0, 0, -x * u, -x * v])
        matrix.append([0, 0, 0, u, v, 1, -y * u, -y * v])
        vector.extend([x, y])
    return np.linalg.solve(np.array(matrix, dtype=np.float64), np.array(vector, dtype=np.float64)).tolist()


def mouse(digit, rng):
    """Drawn with a mouse on a 280×280 web canvas: wobbly polylines, round pen; black on white, or on a
    transparent background as a browser's canvas exports it."""
    from PIL import Image

    size = 280
    width = int(rng.integers(8, 24))
    ink = strokes.draw(digit, rng, size=size, pen_width=width)
    if rng.random() < 0.4:
        pixels = np.zeros((size, size, 4), dtype=np.uint8)
        pixels[..., 3] = to_uint8(ink)
        return encode(Image.fromarray(pixels, "RGBA"), ".png"), ".png"
    return encode(Image.fromarray(to_uint8(1.0 - ink)), ".png"), ".png"


FONT_STYLES = {"marker": marker, "pen": pen, "pencil": pencil, "scan": scan, "blur": blurred, "jpeg": jpeg,
               "photo": photo}


def generate(directory, seed=DEFAULT_SEED, per_digit=DEFAULT_PER_DIGIT, progress=None):
    """Write the set into `directory` (one folder per style, and labels.csv); return its Samples.

    Raises: FileNotFoundError when a font package is missing.
    """
    directory = pathlib.Path(directory)
    fonts = font_paths()
    rng = np.random.default_rng(seed)
    samples = []
    for style in STYLES:
        (directory / style).mkdir(parents=True, exist_ok=True)
        for digit in range(10):
            writers = rng.permutation(len(fonts))
            for index in range(per_digit):
                if style == "mouse":
                    data, suffix = mouse(digit, rng)
                    writer = "mouse"
                else:
                    font = fonts[writers[index % len(fonts)]]
                    data, suffix = FONT_STYLES[style](lambda height, font=font: render_glyph(font, digit, height), rng)
                    writer = font.stem
                name = f"{style}/{style}-{digit}-{index:02d}{suffix}"
                (directory / name).write_bytes(data)
                samples.append(Sample(name, digit, style, writer))
        if progress:
            progress(style, len(samples))
    with open(directory / LABELS_FILE, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "label", "style", "writer"])
        writer.writerows(dataclasses.astuple(sample) for sample in samples)
    return samples


def read_labels(directory):
    """The Samples listed in `directory`/labels.csv. Raises: FileNotFoundError, ValueError."""
    path = pathlib.Path(directory) / LABELS_FILE
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or set(rows[0]) != {"file", "label", "style", "writer"}:
        raise ValueError(f"{path}: expected the columns file, label, style, writer")
    return [Sample(row["file"], int(row["label"]), row["style"], row["writer"]) for row in rows]
