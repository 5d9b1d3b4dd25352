"""The small fact tables the smoke drills (:mod:`arabic_r1.smoke_drills`) are built from: authors, word meanings,
dialect words, reviews, everyday ethics, in Arabic and English. Nothing here is asked by a benchmark fixture."""

from __future__ import annotations

# ------------------------------------------------------------------------------------------- fact tables
AUTHORS_AR = (
    ("كليلة ودمنة", "ابن المقفع"), ("المقدمة", "ابن خلدون"), ("البيان والتبيين", "الجاحظ"),
    ("النبي", "جبران خليل جبران"), ("رجال في الشمس", "غسان كنفاني"), ("موسم الهجرة إلى الشمال", "الطيب صالح"),
    ("أهل الكهف", "توفيق الحكيم"), ("عبقرية عمر", "عباس محمود العقاد"), ("مدن الملح", "عبد الرحمن منيف"),
    ("الخبز الحافي", "محمد شكري"), ("ثلاثية غرناطة", "رضوى عاشور"), ("دعاء الكروان", "طه حسين"),
    ("اللص والكلاب", "نجيب محفوظ"), ("حديث عيسى بن هشام", "محمد المويلحي"), ("العبرات", "مصطفى لطفي المنفلوطي"),
)  # fmt: skip
DEVICES_AR = (
    ("الجمع بين الكلمة وضدها في الكلام", "الطباق"),
    ("تشابه لفظين في النطق مع اختلافهما في المعنى", "الجناس"),
    ("توافق الفاصلتين في الحرف الأخير من النثر", "السجع"),
    ("تشبيه حذف أحد طرفيه", "الاستعارة"),
    ("لفظ أريد به لازم معناه مع جواز إرادة المعنى الأصلي", "الكناية"),
    ("عقد مقارنة بين شيئين يشتركان في صفة بأداة", "التشبيه"),
)
FORMS_AR = (  # poetic and prose forms
    ("قصيدة يقف فيها الشاعر على الأطلال ويذكر ديار الأحبة", "القصيدة الجاهلية"),
    ("فن نثري يقوم على السجع وعلى بطل يتنقل بحيلته بين المدن", "المقامة"),
    ("نص قصير يقوم على حدث واحد وشخصيات قليلة", "القصة القصيرة"),
    ("نص يكتبه صاحبه عن حياته هو", "السيرة الذاتية"),
    ("نص أدبي يكتب ليمثل على المسرح", "المسرحية"),
)
PLURALS_AR = (
    ("بيت", "بيوت"), ("رجل", "رجال"), ("شجرة", "أشجار"), ("مدينة", "مدن"),
    ("نهر", "أنهار"), ("جبل", "جبال"), ("طالب", "طلاب"), ("باب", "أبواب"), ("ولد", "أولاد"), ("بحر", "بحار"),
    ("نجم", "نجوم"), ("صديق", "أصدقاء"), ("شارع", "شوارع"), ("سوق", "أسواق"), ("درس", "دروس"), ("حصان", "خيول"),
)  # fmt: skip
ANTONYMS_AR = (
    ("طويل", "قصير"), ("كبير", "صغير"), ("قريب", "بعيد"), ("سريع", "بطيء"), ("غني", "فقير"), ("قوي", "ضعيف"),
    ("حار", "بارد"), ("جديد", "قديم"), ("سهل", "صعب"), ("الفرح", "الحزن"), ("النور", "الظلام"),
    ("واسع", "ضيق"), ("ثقيل", "خفيف"),
)  # fmt: skip
SYNONYMS_AR = (
    ("الليث", "الأسد"), ("السرور", "الفرح"), ("المرء", "الإنسان"),
    ("الفؤاد", "القلب"), ("الحسام", "السيف"), ("البيداء", "الصحراء"), ("الوجل", "الخوف"), ("الأسى", "الحزن"),
    ("الرغد", "الرخاء"), ("الدجى", "الظلام"),
)  # fmt: skip
STORY_AR = (  # a one-sentence context and a question about it
    ("ذهبت مريم إلى السوق صباحًا واشترت تفاحًا وخبزًا.", "ماذا اشترت مريم؟", "تفاحًا وخبزًا", ("لحمًا وأرزًا", "كتبًا وأقلامًا", "حليبًا وجبنًا")),
    ("سافر خالد بالقطار إلى المدينة ليزور جده المريض.", "لماذا سافر خالد؟", "ليزور جده المريض", ("ليعمل هناك", "ليشتري سيارة", "ليلعب الكرة")),
    ("قرأت سلمى كتابًا عن النجوم في مكتبة المدرسة.", "أين قرأت سلمى الكتاب؟", "في مكتبة المدرسة", ("في البيت", "في الحديقة", "في القطار")),
    ("زرع الفلاح أشجار الزيتون في الربيع وسقاها كل أسبوع.", "متى زرع الفلاح الأشجار؟", "في الربيع", ("في الشتاء", "في الخريف", "في الصيف")),
    ("كتب يوسف رسالة شكر إلى معلمه بعد نجاحه في الامتحان.", "إلى من كتب يوسف الرسالة؟", "إلى معلمه", ("إلى أخيه", "إلى صديقه", "إلى جاره")),
    ("خرجت العائلة إلى الشاطئ يوم الجمعة لأن الجو كان جميلًا.", "لماذا خرجت العائلة؟", "لأن الجو كان جميلًا", ("لأن المدرسة مغلقة", "لأنها تبحث عن بيت", "لأن الطعام نفد")),
    ("ساعد أحمد جارته العجوز في حمل أكياسها إلى البيت.", "بماذا ساعد أحمد جارته؟", "في حمل أكياسها", ("في كتابة رسالة", "في إصلاح سيارتها", "في طهي الطعام")),
    ("رسمت ليلى لوحة لبحر هادئ وقوارب صغيرة.", "ماذا رسمت ليلى؟", "بحرًا هادئًا وقوارب صغيرة", ("جبلًا عاليًا", "مدينة مزدحمة", "غابة كثيفة")),
)  # fmt: skip
REVIEWS_AR = (
    ("الطعام لذيذ والخدمة سريعة والأسعار معقولة.", "إيجابي"), ("وصل المنتج مكسورًا ولم يرد أحد على شكواي.", "سلبي"),
    ("الغرفة نظيفة والموظفون لطفاء جدًا.", "إيجابي"), ("تأخر التوصيل أسبوعًا كاملًا دون اعتذار.", "سلبي"),
    ("الجودة عالية والتغليف محكم.", "إيجابي"), ("التطبيق يتوقف كلما فتحت صفحة الدفع.", "سلبي"),
    ("استلمت الطلب يوم الثلاثاء كما هو مذكور في الموقع.", "محايد"), ("المقاس مناسب والقماش ناعم ومريح.", "إيجابي"),
    ("الصوت في السماعة ضعيف والبطارية تفرغ بسرعة.", "سلبي"), ("المتجر يفتح في التاسعة صباحًا ويغلق في العاشرة مساءً.", "محايد"),
    ("المدرب يشرح بوضوح ويجيب عن كل الأسئلة.", "إيجابي"), ("الشاشة فيها خدوش والبائع رفض الاستبدال.", "سلبي"),
    ("يحتوي الصندوق على الجهاز والشاحن ودليل الاستعمال.", "محايد"), ("أنصح أصدقائي بهذا المقهى الهادئ.", "إيجابي"),
    ("الموظف كان فظًا والانتظار طال ساعتين.", "سلبي"), ("دفعت بالبطاقة وحصلت على الفاتورة بالبريد.", "محايد"),
)  # fmt: skip
ETHICS_AR = (
    ("وجد سعيد هاتفًا ضائعًا في الحافلة، فما التصرف الصحيح؟", "أن يسلمه للسائق أو لمكتب المفقودات", ("أن يحتفظ به لنفسه", "أن يبيعه في السوق", "أن يرميه من النافذة"), "الأمانة"),
    ("طلب منك زميلك أن تغشه في الامتحان، فما الموقف الصحيح؟", "أن تعتذر وتنصحه بالمذاكرة", ("أن تساعده سرًا", "أن تطلب منه مالًا", "أن تخبره بإجابات خاطئة"), "الصدق والعدل"),
    ("ما واجب الأبناء تجاه والديهم عند الكبر؟", "برهما والإحسان إليهما", ("تركهما وحدهما", "الانشغال عنهما دائمًا", "رفع الصوت عليهما"), "بر الوالدين"),
    ("مرض جارك وبقي في بيته أيامًا، فما التصرف المناسب؟", "زيارته والسؤال عنه", ("تجاهله حتى يشفى", "الشكوى من مرضه", "إزعاجه بالضجيج"), "حق الجار"),
    ("وعدت صديقك بمساعدته يوم السبت، فما الواجب عليك؟", "الوفاء بالوعد في موعده", ("نسيان الوعد", "التأخر دون عذر", "طلب أجر على المساعدة"), "الوفاء بالعهد"),
    ("أعطاك البائع باقيًا أكثر من حقك، فماذا تفعل؟", "أن ترد الزيادة إليه", ("أن تحتفظ بها", "أن تنفقها بسرعة", "أن تسكت عنها"), "الأمانة"),
    ("ما حكم دفع مال لموظف حتى يقدم معاملتك على غيرك؟", "رشوة يمنعها القانون والشرع", ("عمل مقبول", "هدية واجبة", "حق للموظف"), "العدل والقانون"),
    ("رأيت صورة خاصة لزميلتك في هاتف صديق، فما الصواب؟", "أن تطلب منه حذفها وعدم نشرها", ("أن تنشرها", "أن تطلب نسخة منها", "أن تضحك منها أمام الناس"), "احترام الخصوصية"),
    ("أخطأت في حق أخيك الصغير، فما التصرف الصحيح؟", "أن تعتذر منه وتصلح خطأك", ("أن تلومه هو", "أن تتجاهل الأمر", "أن تعاقبه"), "الإحسان والعدل"),
    ("ما التصرف الصحيح عند رؤية إشارة المرور حمراء؟", "التوقف حتى تصبح خضراء", ("الإسراع قبل أن تتغير", "تجاوزها إذا خلا الطريق", "إطلاق البوق"), "احترام القانون"),
    ("زارك ضيف في المساء، فما الذي توجبه آداب الضيافة؟", "استقباله بالترحاب وإكرامه", ("سؤاله متى يغادر", "تركه وحده", "الانشغال بالهاتف عنه"), "الكرم وحق الضيف"),
    ("طلب منك والدك أمرًا وأنت متعب، فما الأحسن؟", "أن تستجيب له بلطف أو تعتذر بأدب", ("أن ترفع صوتك", "أن تتظاهر بأنك لم تسمع", "أن تغضب منه"), "بر الوالدين"),
)  # fmt: skip
DIALECT_AR = (  # word, dialect, meaning
    ("إزيك", "المصرية", "كيف حالك"), ("عايز", "المصرية", "أريد"), ("فين", "المصرية", "أين"),
    ("شلونك", "العراقية", "كيف حالك"), ("هسه", "العراقية", "الآن"), ("شكو ماكو", "العراقية", "ما الأخبار"),
    ("بدي", "الشامية", "أريد"), ("قديش", "الشامية", "كم"), ("كتير", "الشامية", "كثير"),
    ("دابا", "المغربية", "الآن"), ("واش", "المغربية", "هل"), ("برشا", "التونسية", "كثير"),
    ("إيش", "الحجازية", "ماذا"), ("وش", "النجدية", "ماذا"), ("زين", "الخليجية", "جيد"),
    ("بكرة", "المصرية", "غدًا"), ("ليش", "الشامية", "لماذا"),
)  # fmt: skip
MEANINGS_AR = (
    "كيف حالك",
    "أريد",
    "أين",
    "الآن",
    "ما الأخبار",
    "كم",
    "كثير",
    "هل",
    "ماذا",
    "جيد",
    "غدًا",
    "لماذا",
)
GREETINGS_AR = (  # a greeting and its customary reply
    ("السلام عليكم", "وعليكم السلام"), ("صباح الخير", "صباح النور"), ("مساء الخير", "مساء النور"),
    ("عيد مبارك", "علينا وعليكم"), ("رمضان كريم", "الله أكرم"), ("شكرًا لك", "العفو"),
    ("مبروك النجاح", "الله يبارك فيك"), ("حمدًا لله على السلامة", "الله يسلمك"), ("تصبح على خير", "وأنت من أهله"),
)  # fmt: skip
PRODUCTS_AR = (
    "الهاتف",
    "الفندق",
    "المطعم",
    "الحذاء",
    "التطبيق",
    "الغسالة",
    "المقهى",
    "السماعة",
    "الكتاب",
    "المتجر",
)
PRAISE_AR = ("جودته ممتازة", "وصل في موعده", "سعره مناسب", "الموظفون فيه لطفاء", "استعماله سهل", "يستحق الشراء",
             "التغليف محكم", "أنصح به أصدقائي")  # fmt: skip
COMPLAINT_AR = ("تعطل بعد أسبوع", "وصل متأخرًا", "سعره مرتفع جدًا", "الخدمة فيه بطيئة", "لم يرد أحد على شكواي",
                "لا يستحق ثمنه", "رائحته كريهة", "صوته مزعج")  # fmt: skip
POETS_AR = ("المتنبي", "أبو تمام", "البحتري", "أحمد شوقي", "حافظ إبراهيم", "نزار قباني", "محمود درويش",
            "بدر شاكر السياب", "الخنساء", "امرؤ القيس", "عنترة بن شداد", "أبو العلاء المعري")  # fmt: skip
SCHOLARS_AR = (
    "ابن سينا",
    "الخوارزمي",
    "ابن الهيثم",
    "أبو بكر الرازي",
    "البيروني",
    "جابر بن حيان",
    "ابن النفيس",
)
NOUNS_AR = ("مدرسة", "قمر", "كتاب", "حديقة", "نافذة", "سماء", "طريق", "قلم", "مدينة", "شجرة", "بحر", "جبل")
VERBS_AR = ("كتب", "يقرأ", "ذهب", "يلعب", "اسمع", "جلس", "يسافر", "فهم", "ينام", "ركض")
PARTICLES_AR = ("في", "على", "من", "إلى", "لن", "لم", "هل", "عن")
PHRASES_AR = {  # everyday phrases by dialect
    "المصرية": ("إزيك عامل إيه", "أنا عايز أروح البيت", "الأكل ده حلو قوي", "هنتقابل فين بكرة"),
    "الشامية": ("كيفك شو أخبارك", "بدي روح ع البيت", "هلق جاي لعندك", "قديش حق هالكتاب"),
    "العراقية": ("شلونك شكو ماكو", "هسه أجي يمك", "هذا الأكل كلش طيب", "وين رايح اليوم"),
    "المغربية": ("واش نتا بخير", "بغيت نمشي للدار", "هادشي زوين بزاف", "دابا غادي نجي"),
    "الخليجية": ("شخبارك اليوم", "أبي أروح البيت", "هذا وايد زين", "وش تسوي الحين"),
}
ACTS_AR = (  # an act, whether it is acceptable, and the value that decides it
    ("إعادة المال الزائد إلى البائع", True, "الأمانة"), ("الغش في الميزان", False, "الأمانة"),
    ("زيارة الأقارب في العيد", True, "صلة الرحم"), ("قطع الإشارة الحمراء", False, "احترام القانون"),
    ("مساعدة كبير السن في عبور الطريق", True, "الإحسان"), ("نشر صورة شخص دون إذنه", False, "احترام الخصوصية"),
    ("الكذب في الشهادة أمام القاضي", False, "العدل"), ("الوفاء بالوعد", True, "الوفاء بالعهد"),
    ("أخذ مال اليتيم", False, "العدل والأمانة"), ("التصدق على المحتاج", True, "الإحسان"),
    ("دفع الأجرة للعامل في موعدها", True, "العدل"), ("قراءة رسائل الزميل سرًا", False, "احترام الخصوصية"),
    ("إكرام الضيف", True, "الكرم"), ("رمي النفايات في الشارع", False, "احترام القانون"),
    ("الاعتذار عن الخطأ", True, "الأخلاق"), ("الغش في الامتحان", False, "الصدق"),
    ("بر الوالدين", True, "بر الوالدين"), ("التعدي على ملك الجار", False, "حق الجار"),
)  # fmt: skip

AUTHORS_EN = (
    ("Hamlet", "William Shakespeare"), ("Pride and Prejudice", "Jane Austen"), ("Great Expectations", "Charles Dickens"),
    ("The Prophet", "Kahlil Gibran"), ("Frankenstein", "Mary Shelley"), ("Moby-Dick", "Herman Melville"),
    ("The Old Man and the Sea", "Ernest Hemingway"), ("Don Quixote", "Miguel de Cervantes"),
)  # fmt: skip
ANTONYMS_EN = (("ancient", "modern"), ("generous", "stingy"), ("brave", "cowardly"), ("narrow", "wide"),
               ("early", "late"), ("rough", "smooth"), ("empty", "full"), ("victory", "defeat"))  # fmt: skip
REVIEWS_EN = (
    ("The food was delicious and the staff were kind.", "Positive"), ("The parcel arrived broken and nobody replied.", "Negative"),
    ("The room was clean and quiet.", "Positive"), ("Delivery took three weeks without any update.", "Negative"),
    ("The store opens at nine and closes at ten.", "Neutral"), ("The battery dies within two hours.", "Negative"),
    ("Great value for money, I would buy it again.", "Positive"), ("The box contains the charger and a manual.", "Neutral"),
)  # fmt: skip
ETHICS_EN = (
    ("You find a lost wallet on the bus. What is the right thing to do?", "Hand it to the driver or the lost-property office", ("Keep the money", "Leave it for someone else", "Throw it away"), "honesty and trust"),
    ("A classmate asks you to let them copy your exam. What should you do?", "Politely refuse and offer to study together", ("Let them copy", "Ask for payment", "Give wrong answers"), "honesty and fairness"),
    ("A shopkeeper gives you too much change. What should you do?", "Give the extra money back", ("Keep it quietly", "Spend it quickly", "Ask for more"), "honesty"),
    ("Your elderly neighbour is ill at home. What is a kind response?", "Visit and ask what they need", ("Ignore them", "Complain about the noise", "Wait until they recover"), "respect for neighbours"),
    ("You promised to help a friend move house on Saturday. What should you do?", "Keep the promise or tell them early if you cannot", ("Forget about it", "Arrive without notice a week later", "Ask to be paid"), "keeping one's word"),
    ("The traffic light turns red as you approach. What is the right action?", "Stop and wait for green", ("Speed up", "Drive through if the road is empty", "Sound the horn"), "respect for the law"),
    ("A colleague asks you to sign the attendance sheet for them. What should you do?", "Decline and suggest they speak to the manager", ("Sign it for them", "Sign it for a fee", "Sign it and tell nobody"), "honesty at work"),
    ("You broke a neighbour's window while playing football. What should you do?", "Tell them and offer to pay for it", ("Run away", "Blame another child", "Say nothing"), "responsibility"),
)  # fmt: skip
POETS_EN = (
    "William Shakespeare",
    "John Keats",
    "Emily Dickinson",
    "Walt Whitman",
    "William Wordsworth",
    "Robert Frost",
)
SCIENTISTS_EN = (
    "Isaac Newton",
    "Marie Curie",
    "Charles Darwin",
    "Ibn al-Haytham",
    "Al-Khwarizmi",
    "Albert Einstein",
)
WORDS_EN = {"noun": ("river", "window", "teacher", "garden", "city", "book"), "verb": ("run", "write", "listen", "travel", "sleep", "read"),
            "adjective": ("quiet", "bright", "heavy", "gentle", "narrow", "brave")}  # fmt: skip
PRODUCTS_EN = (
    "The phone",
    "The hotel",
    "The restaurant",
    "The app",
    "The jacket",
    "The blender",
    "The course",
    "The cafe",
)
PRAISE_EN = (
    "works perfectly",
    "arrived on time",
    "is worth the price",
    "has friendly staff",
    "is easy to use",
    "exceeded my expectations",
)
COMPLAINT_EN = (
    "broke after a week",
    "arrived late",
    "is far too expensive",
    "has slow service",
    "ignored my complaint",
    "smells bad",
)
ACTS_EN = (("returning extra change to the cashier", True, "honesty"), ("copying a classmate's homework", False, "honesty"),
           ("visiting a sick neighbour", True, "kindness"), ("reading a colleague's private messages", False, "privacy"),
           ("keeping a promise", True, "trust"), ("running a red light", False, "respect for the law"),
           ("paying workers on time", True, "fairness"), ("littering in a park", False, "responsibility"),
           ("apologising for a mistake", True, "integrity"), ("lying under oath", False, "justice"))  # fmt: skip
NAMES_AR = ("أحمد", "مريم", "خالد", "سلمى", "يوسف", "ليلى", "عمر", "هدى")
OBJECTS_AR = (("أقلام", "قلم"), ("كتب", "كتاب"), ("تفاحات", "تفاحة"), ("دفاتر", "دفتر"), ("كراسي", "كرسي"))
SOCIAL_EN = (
    ("A guest arrives at your home in the evening. What do good manners suggest?", "Welcome them warmly and offer a drink", ("Ask when they will leave", "Keep watching television", "Leave them at the door")),
    ("Someone greets you with \"As-salamu alaykum\". What is the usual reply?", "Wa alaykum as-salam", ("Good night", "See you tomorrow", "Happy birthday")),
    ("At a family dinner, an elderly relative enters the room. What is polite?", "Stand up and greet them first", ("Keep eating", "Ignore them", "Leave the room")),
    ("A friend shares good news about passing an exam. What is a fitting reply?", "Congratulate them warmly", ("Change the subject", "Say it was easy", "Ask about their mistakes")),
    ("You are invited to a wedding but cannot attend. What is courteous?", "Apologise in advance and send your good wishes", ("Say nothing", "Arrive late without notice", "Complain about the date")),
    ("A stranger asks you for directions in the street. What is helpful?", "Explain the way clearly", ("Walk away", "Point in a random direction", "Laugh at the question")),
)  # fmt: skip
