"""Word lists of the language-mixing detector: function words of the languages most often spliced, and
programming vocabulary, commands and title words that Japanese technical text uses as they are."""

STRONG = set("şŞğĞıİłŁąĄęĘżŻźŹśŚćĆńŃřŘěĚůŮťŤďĎňŇőŐűŰšŠčČžŽ")
MACRON = set("āēīōūĀĒĪŌŪâêîôû")
FUNCTION = set("""
the a an of and or to in on at for with from by as is are was were be been being it its this that these those
which who whom what when where why how not no but if then than so such can could will would should may might
must do does did has have had you he she we they me him her us them my your his our their there here very also
just only about into over after before because while although however therefore nevertheless moreover
furthermore meanwhile indeed perhaps maybe actually really something nothing everything
ve bir bu da de ile ama veya gibi daha en ne mi ki olan olarak sonra kadar ancak fakat belki
i w z na do nie to jest ze ale jak od po za przez oraz tylko jako jednak tak czy tym ten bardzo
v se je pro nebo jsou byl by ani jeho jejich velmi
der die das und ist nicht mit von zu den ein eine auch sich
le la les et est une des du que pour dans pas sur avec
el los las y es por con para una del
""".split())
# Function words that double as programming keywords, operators or one-letter variables.
AMBIGUOUS = set("a i v w z y e to in on at as is if or no so be do by and not for with from this then "
                 "can may has new all any else case each while when where until into del".split())
TECH = set("""
list dict set tuple map array string int float bool char byte void null none true false self main print
return import class def function method var let const async await try catch except raise yield lambda
loop for while if else switch break continue range len append push pop key value index type object file
path dir log debug test build run install config json yaml http https api url html css sql git pip npm
docker app web server client token model batch layer tensor loss epoch data id ok src lib bin etc
""".split())
COMMANDS = set("pip pip3 git npm npx apt apt-get sudo docker python python3 conda brew cargo go make cd ls "
                "curl wget ssh kubectl yarn uv mkdir rm cp mv cat echo export source".split())
# Lower-case words a Title Case name or title may contain ("Pride and Prejudice", "Leonardo da Vinci").
TITLE_WORDS = set("a an the of and or in on at to for with by from is are vs as de la le du da di del van von "
                  "der den y e".split())
