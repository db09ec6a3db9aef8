// CodeMirror 6 with Dockerfile (and shell) highlighting, in its own lazy chunk. Colours come from
// CSS variables, and the editor's light/dark base follows the page's theme as it switches.
import { basicSetup } from "codemirror";
import { Compartment, EditorState } from "@codemirror/state";
import { EditorView, keymap } from "@codemirror/view";
import { HighlightStyle, StreamLanguage, syntaxHighlighting } from "@codemirror/language";
import { dockerFile } from "@codemirror/legacy-modes/mode/dockerfile";
import { shell } from "@codemirror/legacy-modes/mode/shell";
import { tags as t } from "@lezer/highlight";
import { useEffect, useRef } from "react";

export interface CodeEditorProps {
  path: string;
  value: string;
  onChange: (value: string) => void;
  onSave: () => void;
  label: string;
}

function languageFor(path: string) {
  const base = path.split("/").pop() ?? "";
  if (/^(Dockerfile|Containerfile)(\..*)?$/i.test(base) || base.endsWith(".dockerfile")) return [StreamLanguage.define(dockerFile)];
  if (/\.(sh|bash)$/.test(base)) return [StreamLanguage.define(shell)];
  return [];
}

const highlight = HighlightStyle.define([
  { tag: [t.keyword, t.controlKeyword, t.definitionKeyword], color: "var(--cm-keyword)", fontWeight: "600" },
  { tag: [t.string, t.special(t.string)], color: "var(--cm-string)" },
  { tag: [t.comment, t.lineComment, t.blockComment], color: "var(--cm-comment)", fontStyle: "italic" },
  { tag: [t.number, t.bool, t.atom], color: "var(--cm-number)" },
  { tag: [t.variableName, t.propertyName, t.special(t.variableName)], color: "var(--cm-variable)" },
  { tag: [t.operator, t.punctuation, t.bracket], color: "var(--muted)" },
  { tag: t.invalid, color: "var(--bad)" },
]);

const base = EditorView.theme({
  "&": { backgroundColor: "var(--panel)", color: "var(--text)", height: "100%" },
  ".cm-content": { caretColor: "var(--text)", fontFamily: "ui-monospace, 'DejaVu Sans Mono', monospace" },
  ".cm-gutters": { backgroundColor: "var(--code)", color: "var(--muted)", borderRight: "1px solid var(--border)" },
  ".cm-activeLine": { backgroundColor: "color-mix(in srgb, var(--accent) 7%, transparent)" },
  ".cm-activeLineGutter": { backgroundColor: "color-mix(in srgb, var(--accent) 14%, transparent)" },
  "&.cm-focused": { outline: "2px solid var(--focus)" },
  ".cm-scroller": { overflow: "auto" },
});

const isDark = () => document.documentElement.dataset.theme === "dark";
const mode = (dark: boolean) => EditorView.theme({}, { dark });

export default function CodeEditor({ path, value, onChange, onSave, label }: CodeEditorProps) {
  const host = useRef<HTMLDivElement>(null);
  const view = useRef<EditorView>();
  const latest = useRef({ onChange, onSave });
  latest.current = { onChange, onSave };

  useEffect(() => {
    const theme = new Compartment();
    const editor = new EditorView({
      parent: host.current!,
      state: EditorState.create({
        doc: value,
        extensions: [
          keymap.of([{ key: "Mod-s", preventDefault: true, run: () => (latest.current.onSave(), true) }]),
          basicSetup,
          languageFor(path),
          syntaxHighlighting(highlight),
          base,
          theme.of(mode(isDark())),
          EditorView.contentAttributes.of({ "aria-label": label }),
          EditorView.updateListener.of((u) => u.docChanged && latest.current.onChange(u.state.doc.toString())),
        ],
      }),
    });
    view.current = editor;
    const observer = new MutationObserver(() => editor.dispatch({ effects: theme.reconfigure(mode(isDark())) }));
    observer.observe(document.documentElement, { attributes: true, attributeFilter: ["data-theme"] });
    return () => {
      observer.disconnect();
      editor.destroy();
    };
    // One editor per file: the parent keys it by path; later `value` changes come from typing.
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [path]);

  // A value set from outside (the file reloaded) replaces the document.
  useEffect(() => {
    const editor = view.current;
    if (editor && editor.state.doc.toString() !== value) {
      editor.dispatch({ changes: { from: 0, to: editor.state.doc.length, insert: value } });
    }
  }, [value]);

  return <div className="code-editor" ref={host} data-testid="code-editor" />;
}
