// Command genman writes the manual pages seqshiftd(8) and seqshiftd.yaml(5) from README.md.
//
// The README is the one source: its configuration key table, ISN modes, reload steps, command
// table and operating notes are what the pages say, so the manual cannot drift from it. The
// pages are assembled from named README sections (see pages) and converted from the small
// subset of Markdown the README uses: headings, paragraphs, tables, ordered lists, fenced code
// and inline code, bold, italics and links.
//
// genman must never guess: a README section a page names that is missing, or a Markdown
// construct it does not know, is an error, so a README edit that would silently drop text from
// the manual fails `make man` (and the test) instead.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
)

func main() {
	readme := flag.String("readme", "README.md", "the README the pages are generated from")
	out := flag.String("o", ".", "directory to write seqshiftd.8 and seqshiftd.yaml.5 into")
	version := flag.String("version", "", "version shown in the page footer")
	date := flag.String("date", "", "date shown in the page footer (YYYY-MM-DD), e.g. the changelog's")
	flag.Parse()
	if flag.NArg() != 0 || *version == "" || *date == "" {
		fmt.Fprintln(os.Stderr, "usage: genman -readme README.md -o DIR -version V -date YYYY-MM-DD")
		os.Exit(2)
	}
	src, err := os.ReadFile(*readme)
	if err != nil {
		fmt.Fprintln(os.Stderr, "genman:", err)
		os.Exit(1)
	}
	doc := parseSections(string(src))
	for _, p := range pages {
		text, err := p.render(doc, *version, *date)
		if err != nil {
			fmt.Fprintf(os.Stderr, "genman: %s(%s): %v\n", p.name, p.section, err)
			os.Exit(1)
		}
		if err := os.WriteFile(filepath.Join(*out, p.name+"."+p.section), []byte(text), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "genman:", err)
			os.Exit(1)
		}
	}
}
