"""`stage contact-sheet`: a PNG of extracted frames with their map and box layouts drawn over them."""

from stage.data.contact_sheet import contact_sheet

NAME = "contact-sheet"
HELP = "Draw a contact sheet PNG of an extracted split (frames, and frames with layout overlays)"


def add_arguments(parser):
    from stage.cli import positive_int

    parser.add_argument("--data", required=True, help="extracted split folder")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--scenes", type=positive_int, default=3)
    parser.add_argument("--frames", type=positive_int, default=6)


def run(args, config):
    from stage.paths import output_file

    print(contact_sheet(args.data, output_file(args.out), args.scenes, args.frames))
