// The code editor: CodeMirror 6 with a small, hand-picked set of extensions
// and a syntax mode per language id.

import { closeBrackets, closeBracketsKeymap } from "@codemirror/autocomplete";
import {
  defaultKeymap,
  history,
  historyKeymap,
  indentWithTab,
  simplifySelection,
  temporarilySetTabFocusMode,
} from "@codemirror/commands";
import { cpp } from "@codemirror/lang-cpp";
import { java } from "@codemirror/lang-java";
import { javascript } from "@codemirror/lang-javascript";
import { python } from "@codemirror/lang-python";
import {
  bracketMatching,
  HighlightStyle,
  indentOnInput,
  indentUnit,
  type LanguageSupport,
  syntaxHighlighting,
} from "@codemirror/language";
import { EditorState, type Extension, Prec } from "@codemirror/state";
import {
  drawSelection,
  EditorView,
  highlightActiveLine,
  highlightActiveLineGutter,
  highlightSpecialChars,
  keymap,
  lineNumbers,
} from "@codemirror/view";
import { tags as t } from "@lezer/highlight";

const MODES: Record<string, () => LanguageSupport> = { python, javascript, java, cpp };

/** Indentation per language: 4 spaces, 2 for JavaScript. */
function modeFor(language: string): Extension {
  const mode = MODES[language];
  return [mode ? mode() : [], indentUnit.of(language === "javascript" ? "  " : "    ")];
}

// Colours chosen for at least 4.5:1 contrast on the editor background.
const highlight = HighlightStyle.define([
  { tag: [t.keyword, t.modifier, t.controlKeyword, t.operatorKeyword], color: "#c4a7ff" },
  { tag: [t.string, t.special(t.string), t.regexp], color: "#a5e08d" },
  { tag: [t.number, t.bool, t.null, t.atom], color: "#ffb86b" },
  { tag: [t.comment, t.lineComment, t.blockComment], color: "#9aa6b8", fontStyle: "italic" },
  { tag: [t.function(t.variableName), t.function(t.propertyName)], color: "#7cc7ff" },
  { tag: [t.typeName, t.className, t.namespace], color: "#ffd479" },
  { tag: [t.definition(t.variableName)], color: "#e5e7eb" },
  { tag: [t.processingInstruction, t.meta], color: "#ff9ac1" },
  { tag: t.invalid, color: "#ff7b7b" },
]);

const theme = EditorView.theme(
  {
    "&": { height: "100%", color: "#e5e7eb", backgroundColor: "#111827" },
    ".cm-scroller": {
      fontFamily: 'ui-monospace, "SFMono-Regular", Menlo, Consolas, "DejaVu Sans Mono", monospace',
      fontSize: "14px",
      lineHeight: "1.5",
    },
    ".cm-content": { caretColor: "#f9fafb" },
    "&.cm-focused .cm-cursor": { borderLeftColor: "#f9fafb" },
    "&.cm-focused": { outline: "none" },
    ".cm-gutters": { backgroundColor: "#111827", color: "#9aa6b8", border: "none" },
    ".cm-activeLine": { backgroundColor: "#1f2937" },
    ".cm-activeLineGutter": { backgroundColor: "#1f2937", color: "#e5e7eb" },
    "&.cm-focused > .cm-scroller > .cm-selectionLayer .cm-selectionBackground, .cm-selectionBackground":
      { backgroundColor: "#334155" },
    ".cm-matchingBracket": { backgroundColor: "#374151", outline: "1px solid #6b7280" },
  },
  { dark: true },
);

export interface EditorOptions {
  parent: HTMLElement;
  doc: string;
  language: string;
  onChange(doc: string): void;
}

export class CodeEditor {
  readonly view: EditorView;
  private readonly extensions: Extension;

  constructor(options: EditorOptions) {
    this.extensions = [
      lineNumbers(),
      highlightActiveLineGutter(),
      highlightSpecialChars(),
      history(),
      drawSelection(),
      indentOnInput(),
      bracketMatching(),
      closeBrackets(),
      highlightActiveLine(),
      syntaxHighlighting(highlight),
      theme,
      Prec.highest(
        keymap.of([
          // Escape, then Tab, moves the focus out of the editor.
          {
            key: "Escape",
            run: (view) => (simplifySelection(view), temporarilySetTabFocusMode(view)),
          },
        ]),
      ),
      keymap.of([...closeBracketsKeymap, ...defaultKeymap, ...historyKeymap, indentWithTab]),
      EditorView.updateListener.of((update) => {
        if (update.docChanged) options.onChange(update.state.doc.toString());
      }),
      EditorView.contentAttributes.of({ "aria-label": "Code editor", "data-testid": "code" }),
    ];
    this.view = new EditorView({
      parent: options.parent,
      state: this.createState(options.language, options.doc),
    });
  }

  get code(): string {
    return this.view.state.doc.toString();
  }

  /** Replaces the program and its syntax mode, with a fresh undo history. */
  load(language: string, doc: string): void {
    this.view.setState(this.createState(language, doc));
  }

  focus(): void {
    this.view.focus();
  }

  private createState(language: string, doc: string): EditorState {
    return EditorState.create({ doc, extensions: [this.extensions, modeFor(language)] });
  }
}
