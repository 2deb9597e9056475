package main

import (
	"image"
	"image/color"
	"strings"
)

// glyphs is a 3x5 pixel font: five rows per character, each row three
// pixels given as '#' (ink) or '.' (none). Lower case prints as upper case.
var glyphs = map[rune]string{
	'0': "###|#.#|#.#|#.#|###", '1': ".#.|##.|.#.|.#.|###", '2': "###|..#|###|#..|###",
	'3': "###|..#|.##|..#|###", '4': "#.#|#.#|###|..#|..#", '5': "###|#..|###|..#|###",
	'6': "###|#..|###|#.#|###", '7': "###|..#|.#.|.#.|.#.", '8': "###|#.#|###|#.#|###",
	'9': "###|#.#|###|..#|###", 'A': ".#.|#.#|###|#.#|#.#", 'B': "##.|#.#|##.|#.#|##.",
	'C': "###|#..|#..|#..|###", 'D': "##.|#.#|#.#|#.#|##.", 'E': "###|#..|##.|#..|###",
	'F': "###|#..|##.|#..|#..", 'G': "###|#..|#.#|#.#|###", 'H': "#.#|#.#|###|#.#|#.#",
	'I': "###|.#.|.#.|.#.|###", 'J': "..#|..#|..#|#.#|###", 'K': "#.#|##.|#..|##.|#.#",
	'L': "#..|#..|#..|#..|###", 'M': "#.#|###|###|#.#|#.#", 'N': "##.|#.#|#.#|#.#|#.#",
	'O': "###|#.#|#.#|#.#|###", 'P': "###|#.#|###|#..|#..", 'Q': ".#.|#.#|#.#|##.|.##",
	'R': "##.|#.#|##.|#.#|#.#", 'S': ".##|#..|.#.|..#|##.", 'T': "###|.#.|.#.|.#.|.#.",
	'U': "#.#|#.#|#.#|#.#|###", 'V': "#.#|#.#|#.#|#.#|.#.", 'W': "#.#|#.#|###|###|#.#",
	'X': "#.#|#.#|.#.|#.#|#.#", 'Y': "#.#|#.#|.#.|.#.|.#.", 'Z': "###|..#|.#.|#..|###",
	'.': "...|...|...|...|.#.", '-': "...|...|###|...|...", '/': "..#|..#|.#.|#..|#..",
	'(': ".#.|#..|#..|#..|.#.", ')': ".#.|..#|..#|..#|.#.", ':': "...|.#.|...|.#.|...",
	'%': "#.#|..#|.#.|#..|#.#", '=': "...|###|...|###|...", ',': "...|...|...|.#.|#..",
	'+': "...|.#.|###|.#.|...", '>': "#..|.#.|..#|.#.|#..", '<': "..#|.#.|#..|.#.|..#",
}

// textWidth returns the width in pixels of s drawn at the given scale.
func textWidth(s string, scale int) int { return len(s) * 4 * scale }

// drawText draws s with its top-left corner at (x, y), each font pixel as a
// scale-by-scale square. Characters without a glyph print as blanks.
func drawText(img *image.RGBA, x, y int, s string, c color.Color, scale int) {
	for _, r := range strings.ToUpper(s) {
		rows := strings.Split(glyphs[r], "|")
		for gy, row := range rows {
			for gx, p := range row {
				if p != '#' {
					continue
				}
				for dy := range scale {
					for dx := range scale {
						img.Set(x+gx*scale+dx, y+gy*scale+dy, c)
					}
				}
			}
		}
		x += 4 * scale
	}
}
