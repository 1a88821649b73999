"""The language-mixing detector: recall and false positives on clean vs spliced Japanese paragraphs."""

from __future__ import annotations

import random

import pytest

from factory.data.langmix import LangMixDetector, diacritic_score

CLEAN = [
    "今日は朝から雨が降っていたので、駅まで傘をさして歩いた。途中の公園では紫陽花が咲いていて、少しだけ気分が明るくなった。",
    "祖母の家は山あいの小さな村にあり、夏休みになると毎年そこで過ごした。川で魚を捕まえたり、夜には縁側で花火をしたりした。",
    "この町の商店街は戦後すぐに作られたもので、今でも古い看板がいくつも残っている。週末には多くの観光客が訪れる。",
    "新しい図書館は駅前に建てられ、開館初日には千人を超える市民が集まった。館内には子ども向けの読書室も用意されている。",
    "彼女は大学で経済学を学んだあと、地元の銀行に就職した。十年後には支店長となり、地域の中小企業の相談に乗っている。",
    "秋になると山の木々が赤や黄色に色づき、紅葉を見に来る人々で道路が混雑する。特に十一月の連休は渋滞がひどい。",
    "味噌汁の作り方は家庭によって少しずつ違う。昆布と鰹節で出汁をとる家もあれば、煮干しを使う家もある。",
    "江戸時代の城下町では、武士や町人がそれぞれ決められた区域に住んでいた。今でもその名残が地名に見られる。",
    "昨夜は友人と久しぶりに食事をした。学生時代の思い出話に花が咲き、気がつくと終電の時間が近づいていた。",
    "日本の鉄道は時間に正確なことで知られている。数分の遅れでも車内放送でお詫びのアナウンスが流れることがある。",
    "Pythonでは、リストの内包表記を使うと短く書ける。たとえば `[x * 2 for x in range(10)]` は0から18までの偶数を作る。",
    "GPUを使った深層学習では、バッチサイズと学習率の関係に注意が必要だ。バッチサイズを2倍にしたら学習率も調整するとよい。",
    "TransformerはAttention機構を中心にしたモデルで、2017年に発表された論文『Attention Is All You Need』で提案された。",
    "機械学習（machine learning）は人工知能の一分野であり、データから規則性を学習する手法の総称である。",
    "詳しい手順は公式ドキュメント https://docs.python.org/ja/3/tutorial/index.html を参照してほしい。質問はメール info@example.com まで。",
    "サーバーのメモリは64GBで、CPUは16コアある。ディスクはNVMe SSDを2枚使い、RAID 1で冗長化している。",
    "Gitでブランチを切り替えるには git switch feature/login を実行する。変更をコミットしてからpushすること。",
    "HTTPステータスコード404はリソースが見つからないことを、500はサーバー内部のエラーを表す。APIの設計では適切に使い分ける。",
    "Dockerコンテナの中でJupyter Notebookを起動し、ブラウザからlocalhost:8888にアクセスする。トークンはログに表示される。",
    "SQLのJOINには内部結合と外部結合がある。LEFT JOINを使うと、右側のテーブルに一致する行がなくても左側の行は残る。",
    "東京（とうきょう）は日本の首都であり、人口は約1400万人である。面積は2194平方キロメートルほどだ。",
    "円周率πはおよそ3.14159であり、円の周の長さと直径の比を表す。Δxが十分小さいとき、近似の誤差は小さくなる。",
    "この薬は1日3回、食後に2錠ずつ服用してください。症状が改善しない場合は、7日以内に医師に相談してください。",
    "2023年の売上高は前年比12.5%増の3,450億円となり、営業利益は過去最高を更新した。海外事業が成長を牽引した。",
    "iPhoneとAndroidの両方に対応したアプリを作るなら、FlutterやReact Nativeといったフレームワークが候補になる。",
    "Linuxのファイル権限は、所有者、グループ、その他の三つに対して読み取り、書き込み、実行を設定する。chmod 755のように数字で指定できる。",
    "東京から大阪までは新幹線のぞみで約2時間30分かかる。指定席は混雑するので、早めに予約しておくと安心だ。",
    "ショパンの夜想曲は、ピアノを習う人なら一度は弾いてみたい曲だろう。特に第2番変ホ長調はよく知られている。",
    "富士山は標高3776メートルで、日本で最も高い山である。夏の登山シーズンには多くの登山者が山頂を目指す。",
    "量子コンピュータは、重ね合わせと量子もつれを利用して計算を行う。ビットの代わりに量子ビット（qubit）を使う。",
    "ReactではuseStateフックを使ってコンポーネントの状態を管理する。状態が変わると画面が再描画される。",
    "会議の資料はPDFで共有し、議事録は翌日までにSlackのチャンネルに投稿してください。次回はZoomで行います。",
    "ラーメンの味には醤油、味噌、塩、豚骨などがある。地域ごとに特色があり、札幌の味噌ラーメンや博多の豚骨ラーメンが有名だ。",
    "地震が起きたら、まず机の下などに隠れて身の安全を確保する。揺れが収まってから火の元を確認し、落ち着いて避難する。",
    "プロジェクトの締め切りは来週の金曜日です。各担当者は進捗をWikiに記入し、課題があればJiraのチケットを作成してください。",
    "NumPyの配列はPythonのリストより高速に数値計算ができる。np.zeros((3, 4))で3行4列のゼロ行列を作れる。",
    "彼はOsaka Universityで博士号を取得し、その後Tōkyōの研究所に移った。研究テーマは自然言語処理である。",
    "猫は一日の大半を寝て過ごす。窓辺の日だまりで丸くなっている姿を見ると、こちらまで眠くなってくる。",
    "ビタミンCは水に溶けやすく、加熱すると壊れやすい。野菜はさっと茹でるか、生で食べるのがよいとされる。",
    "この関数は入力が空のときにNoneを返す。呼び出し側では戻り値を確認してから処理を続けるようにしよう。",
    "映画『Back to the Future』は1985年に公開され、タイムトラベルを題材にした作品として世界中で人気を集めた。",
    "論文「BERT: Pre-training of Deep Bidirectional Transformers for Language Understanding」は2018年に発表された。",
    "この回路では100Ωの抵抗と10μFのコンデンサを使う。α線やβ線は放射線の一種で、透過力が異なる。",
    "気温は最高32°C、最低24°Cの予報です。風速は毎秒5m、降水確率は30%となっています。",
    "ソウル（朝鮮語: 서울）は大韓民国の首都であり、アテネ（ギリシア語: Αθήνα）はギリシャの首都である。",
    "設定ファイルはconfig.yamlに書き、環境変数DATABASE_URLで接続先を上書きできる。ログはINFOレベルで出力される。",
]

FRAGMENTS = {
    "greek": ["Ωστόσο η κατάσταση", "και το σπίτι", "είναι πολύ καλό", "η γλώσσα μας"],
    "turkish": ["ancak bu durum", "ve çok güzel bir gün", "bunun için teşekkürler", "bugün hava güzel değil"],
    "polish": ["jednak to jest", "dziękuję bardzo za pomoc", "w tym przypadku", "się nie udało"],
    "czech": ["však je to", "děkuji za pomoc", "to je velmi dobré", "ještě jednou"],
    "korean": ["그러나 이것은", "감사합니다", "오늘 날씨가 좋다", "하지만"],
    "english": ["however the results", "and then we went home", "this is not what I expected", "the weather was nice",
                "Nevertheless,", "in the meantime"],
}


def spliced_set(seed: int = 0) -> list[tuple[str, str]]:
    """(language, text): every clean paragraph with one fragment per language spliced at a random point."""
    rng = random.Random(seed)
    out = []
    for lang, frags in FRAGMENTS.items():
        for text in CLEAN:
            cut = rng.choice(_cut_points(text))
            frag = rng.choice(frags)
            pad = rng.choice(["", " "])
            out.append((lang, f"{text[:cut]}{pad}{frag}{pad}{text[cut:]}"))
    return out


def _cut_points(text: str) -> list[int]:
    """Splice points between characters, never inside an ASCII word (a splicer works on tokens)."""
    return [i for i in range(1, len(text)) if not (text[i - 1].isascii() and text[i - 1].isalnum()
                                                    and text[i].isascii() and text[i].isalnum())]


def measure(detector: LangMixDetector) -> tuple[float, float]:
    recall = sum(detector.is_mixed(t) for _, t in spliced_set()) / (len(CLEAN) * len(FRAGMENTS))
    fp = sum(detector.is_mixed(t) for t in CLEAN) / len(CLEAN)
    return recall, fp


def test_recall_and_false_positives():
    recall, fp = measure(LangMixDetector())
    print(f"langmix: recall {recall:.1%} on {len(CLEAN) * len(FRAGMENTS)} spliced, "
          f"false positives {fp:.1%} on {len(CLEAN)} clean")
    assert recall >= 0.95
    assert fp <= 0.02


@pytest.mark.parametrize("lang", list(FRAGMENTS))
def test_every_language_is_caught(lang):
    detector = LangMixDetector()
    texts = [t for lang_, t in spliced_set(seed=1) if lang_ == lang]
    assert sum(detector.is_mixed(t) for t in texts) / len(texts) >= 0.9


@pytest.mark.parametrize("text", CLEAN)
def test_clean_paragraph_has_no_findings(text):
    assert LangMixDetector().findings(text) == []


def test_findings_name_the_rule_and_span():
    findings = LangMixDetector().findings("東京は大きな都市です。Ωστόσο 大阪も人気がある。")
    assert [(f.rule, f.span) for f in findings] == [("Greek", "Ωστόσο")]


def test_thresholds_are_tunable():
    text = "今日は Ελλάδα 東京です。"
    assert LangMixDetector().is_mixed(text)
    assert not LangMixDetector(min_foreign_run=10).is_mixed(text)


def test_diacritic_score_weights_letters():
    assert diacritic_score("Tōkyō") == 0
    assert diacritic_score("schrödinger") == 1
    assert diacritic_score("się") == 2
    assert diacritic_score("Schrödinger Dvořák GÖDEL") == 0  # names


def test_labelled_glosses_urls_and_code_are_legitimate():
    detector = LangMixDetector()
    assert detector.findings("ソウル（朝鮮語: 서울특별시）は韓国の首都である。アテネ（ギリシア語: Αθήνα）も古い。") == []
    assert detector.findings("設定は `the value of x` で指定し、https://example.com/the-end-of-it を見る。") == []
    assert detector.findings("次のように実行する。\n\n    for i in range(3): print(i)\n\n結果は0から2。") == []


def test_scripts_inside_code_and_chinese_only_han_are_caught():
    detector = LangMixDetector()
    assert [f.rule for f in detector.findings("例えば `print('안녕하세요')` と書く。")] == ["Hangul"]
    assert [f.rule for f in detector.findings("東京は大きい。我们这个问题很重要。")] == ["Chinese-only Han"]


# Fixed examples of every kind of the evaluation set (scripts/langmix_eval_set.py), written for this test.
SPLICED = {
    "word_latin": ["画像を右クhelloリックして、キャプションを選択します。", "ユーザー管理casa者だけが設定を変更できます。",
                   "この値は等しくなるはbonjourずです。", "設定szybkoファイルを開いて編集してください。"],
    "word_cyrillic": ["画像の解像привет度を変更します。", "ツールボックスのブラシкошкаを選びます。"],
    "word_hangul": ["グラデーシ가ョンの塗りつぶしを適用します。", "ダイアログボック설정スが表示されます。"],
    "word_han": ["データベ们ースを作成します。", "ファイルを保存这する前に確認してください。"],
    "word_greek": ["テキστοストを入力します。", "ページスタιλίイルを設定します。"],
    "word_thai": ["このツールで真っ直ぐな線が引けまเปิดす。"],
    "word_arabic": ["矢印スタイمرحباルの保存ボタンを押します。"],
    "word_other": ["入力支援ディレクトשלוםリへのリンクを挿入します。", "詳細は後で説नमस्तेします。"],
    "salad_script": ["選択したハンドル Привет как дела хорошо が移動します。", "フィルター 我们说话这个问题 を適用します。"],
    "salad_mixed": ["オブジェクトを τρίμερα pobízený проломавший 불이행한 ずつ適用します。"],
    "salad_ascii": ["輪郭 the quick brown fox jumps を見付けるときの目安です。",
                    "セルの内容 lorem ipsum dolor sit amet を現在のセル幅に合わせます。"],
    "fragments": ["このフォルダーは Ωστόσο 開くダイアログ ancak bu durum から呼び出します。",
                  "パッケージを jednak to jest インストールし、그러나 이것은 再起動します。"],
    "word_boundary": ["ドライバモジュールの名前patrizioを配置してください。", "この設定はstaanplaats、あとで変更できます。",
                      "パーティションをbardzo作成します。", "残りの領域にmềm他のパーティションを作ります。",
                      "見ていない部分vọngが一ヶ所ありました。"],
    "sentence": ["参考文献の種類を選択します。 Der Fluch ist das Gebet des Teufels. 次に情報を追加します。",
                 "変更記録の表示を設定します。Work consists of whatever a body is obliged to do."],
}
LEGITIMATE = {
    "names": ["ドヴォルザーク（Antonín Dvořák）の交響曲第9番は有名だ。", "数学者 Erdős Pál は多くの共著論文を残した。",
              "Gödel の不完全性定理を証明の例として取り上げる。", "Łukasiewicz 記法はポーランド記法とも呼ばれる。",
              "Nguyễn Văn Linh は1980年代の改革を進めた。", "彼はTōkyōの研究所に移った。"],
    "greek_math": ["係数αを0.5とし、Δtを十分小さくとる。", "角速度ωと位相差Δφの関係を示す。", "ε-δ論法で極限を定義する。",
                   "10 μm の膜に 4.7 kΩ の抵抗をつなぐ。", "λ線とβ版の違いを説明する。"],
    "gloss": ["モスクワ（Москва）はロシアの首都である。", "ソウル（서울）を訪れた。", "北京（北京、Běijīng）は中国の首都だ。",
              "時代精神（独: Zeitgeist）という言葉がある。", "簡体字（中国語: 简体字）で書かれている。",
              "ありがとう（dziękuję）とポーランド語で言う。", "「przepraszam」はポーランド語で謝罪の言葉だ。"],
    "technical": ["設定ファイル /etc/apt/sources.list に deb http://deb.debian.org/debian bookworm main を追加する。",
                  "色深度は bits per pixel (bpp) とも表現されます。", "s は Single binary package (単一バイナリーパッケージ) です。",
                  "dget(1) や debuild(1) や debi(1) は devscripts パッケージが必要です。",
                  "LibreOfficeのメインWebサイトからパッケージをダウンロードします。",
                  "PythonやBasicからLibreOfficeのユーザープロファイルを求められます。"],
    "identifier": ["getUserName()を呼び出すと名前が返ります。", "値はos.path.joinで組み立てます。",
                   "MAX_PATH_LENGTHを超えると失敗します。", "(v4, v6 とも) 自動設定をしない。"],
    "product": ["iPhoneで撮った写真をGIMPで開く。", "LibreOffice上で動くマクロです。", "FreeBSD版のパッケージを使う。",
                "Ubuntuの利用者はaptでインストールできる。"],
    "gloss_romaji": ["東京（Tokyo）と京都（Kyōto）を訪れた。", "学習 (gakushū) の結果を示す。"],
    "terms": ["デフォルトのrulesファイルを編集する。", "あなたの変更をテストするまでrootシェルを離れてはいけません。",
              "dpkg-buildpackageによるビルドは、debuildにより自動化できます。debuild(1)を参照してください。",
              "インストール後はWEP やNowákさんの WPA キーが必要です。"],
    "code": ["次のマクロを実行します。\n    MyNumber=5      'Correct'\n    My Number=20    'Not valid, variable with space'",
             "結果を表示します。\nSub Example\n Dim myFV As Double\n myFV = FV(0.04, 2, 750)\n"
             " Print myFV ' returns 4234.00 currency units.\nEnd Sub"],
    "url": ["詳細は https://opengrok.libreoffice.org/xref/help/source/text/shared/the-guide.xhp を参照してください。",
            "バグは <https://bugs.debian.org/cgi-bin/pkgreport.cgi?package=the-package> に報告します。"],
}


@pytest.mark.parametrize("kind,text", [(kind, text) for kind, texts in SPLICED.items() for text in texts])
def test_spliced_example_is_caught(kind, text):
    assert LangMixDetector().is_mixed(text), kind


@pytest.mark.parametrize("kind,text", [(kind, text) for kind, texts in LEGITIMATE.items() for text in texts])
def test_legitimate_foreign_text_passes(kind, text):
    assert LangMixDetector().findings(text) == [], kind


def test_glued_words_name_the_rule():
    findings = LangMixDetector().findings("画像を右クhelloリックします。")
    assert [(f.rule, f.span) for f in findings] == [("inside a word", "hello")]
    # A word between words is not a splice inside one; an acronym or a name inside a compound is not either.
    assert LangMixDetector().findings("画像をGIMPで開き、電源ONボタンを押してからPython版を使う。") == []


def test_words_glued_between_japanese_words_name_their_rule():
    detector = LangMixDetector()
    assert [(f.rule, f.span) for f in detector.findings("パーティションをszybko作成します。")] == [("glued word", "szybko")]
    assert [(f.rule, f.span) for f in detector.findings("部分doáを手作業で直す。")] == [("glued word", "doá")]
    # Before the noun it names, twice in the text, programming vocabulary or shorter than min_glued_letters: a term.
    assert detector.findings("このwatchファイルでは、gccで作ったlistを使う。") == []
    assert LangMixDetector(min_glued_letters=3).is_mixed("このgccでビルドする。")


def test_config_builds_the_same_detector():
    from factory.data.config import LangMixConfig

    assert LangMixDetector.from_config(LangMixConfig()) == LangMixDetector()
