"""The two HTML pages, kept small: the browser does the work, the board sends static text."""

_CONTROL = b'''<!doctype html><html><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>esp32cam-alarm</title><style>
body{font-family:sans-serif;margin:0;background:#222;color:#eee;display:flex;flex-wrap:wrap}
#side{padding:12px;width:260px}#main{flex:1;padding:12px}img{max-width:100%;background:#000}
label{display:flex;justify-content:space-between;margin:6px 0}button,a.b{font:13px sans-serif;margin:4px 4px 4px 0;
padding:6px 10px;background:#06c;color:#fff;border:0;border-radius:4px;text-decoration:none}
</style></head><body><div id="side"><h3>Camera</h3>
<label>Resolution <select id="framesize">
<option value="13">UXGA 1600x1200</option><option value="12">SXGA 1280x1024</option>
<option value="11">HD 1280x720</option><option value="10">XGA 1024x768</option>
<option value="9">SVGA 800x600</option><option value="8">VGA 640x480</option>
<option value="7">HVGA 480x320</option><option value="6">CIF 400x296</option>
<option value="5">QVGA 320x240</option><option value="3">HQVGA 240x176</option>
<option value="1">QQVGA 160x120</option></select></label>
<label>Quality <input type="range" id="quality" min="10" max="63"></label>
<label>Brightness <input type="range" id="brightness" min="-2" max="2"></label>
<label>Contrast <input type="range" id="contrast" min="-2" max="2"></label>
<label>Saturation <input type="range" id="saturation" min="-2" max="2"></label>
<label>Effect <select id="special_effect"><option value="0">None</option>
<option value="1">Negative</option><option value="2">Grayscale</option>
<option value="3">Red</option><option value="4">Green</option><option value="5">Blue</option>
<option value="6">Sepia</option></select></label>
<label>WB mode <select id="wb_mode"><option value="0">Auto</option><option value="1">Sunny</option>
<option value="2">Cloudy</option><option value="3">Office</option><option value="4">Home</option>
</select></label>
<label>V-Flip <input type="checkbox" id="vflip"></label>
<label>H-Mirror <input type="checkbox" id="hmirror"></label>
<button id="still">Get still</button><button id="toggle">Stop stream</button>
<a class="b" id="admin" href="#">Admin</a><p id="msg"></p></div>
<div id="main"><img id="view" alt="live view"></div>
<script>
const SP=@STREAM@,AP=@ADMIN@,host=location.hostname,q=location.search;
const base=location.protocol+'//'+host+':'+SP;let on=true;
const view=document.getElementById('view'),msg=document.getElementById('msg');
function start(){view.src=base+'/stream'+q;on=true;toggle.textContent='Stop stream'}
function stop(){view.src='';window.stop&&0;on=false;toggle.textContent='Start stream'}
document.getElementById('admin').href=location.protocol+'//'+host+':'+AP+'/';
fetch('/status'+q).then(r=>r.json()).then(s=>{for(const k in s){const e=document.getElementById(k);
if(!e)continue;if(e.type=='checkbox')e.checked=!!s[k];else e.value=s[k]}});
document.querySelectorAll('select,input').forEach(e=>e.onchange=()=>{
const v=e.type=='checkbox'?(e.checked?1:0):e.value;const sep=q?q+'&':'?';
fetch('/control'+sep+'var='+e.id+'&val='+v).then(r=>{msg.textContent=r.ok?'':'refused: '+r.status})});
document.getElementById('still').onclick=()=>{stop();view.src='/capture'+q+(q?'&':'?')+'_='+Date.now()};
toggle.onclick=()=>on?stop():start();start();
</script></body></html>'''


def control(stream_port, admin_port):
    return _CONTROL.replace(b'@STREAM@', str(stream_port).encode()).replace(
        b'@ADMIN@', str(admin_port).encode())

ADMIN = b'''<!doctype html><html><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1"><title>esp32cam-alarm admin</title>
<style>body{font-family:sans-serif;margin:12px;background:#222;color:#eee}button{margin:3px;
padding:6px 10px;background:#06c;color:#fff;border:0;border-radius:4px}button.w{background:#a30}
pre{background:#111;padding:8px;white-space:pre-wrap}fieldset{border:1px solid #555;margin:8px 0}
input{width:12em}</style></head><body><h2>esp32cam-alarm admin</h2>
<fieldset><legend>Alarm</legend><button data-a="arm">Arm</button><button data-a="disarm">Disarm</button>
<button data-a="alarm_test">Test alarm</button><button data-a="photo">Photo to Telegram</button></fieldset>
<fieldset><legend>Camera and power</legend><button data-a="camera_on">Camera on</button>
<button data-a="camera_off">Camera off</button><button class="w" data-a="reboot">Reboot</button>
<input id="seconds" type="number" min="1" value="600"> s <button class="w" data-a="sleep">Sleep</button></fieldset>
<fieldset><legend>Remote access (UPnP)</legend><button data-a="open">Open port</button>
<button data-a="close">Close port</button></fieldset>
<fieldset><legend>Telegram</legend><input id="token" placeholder="bot token" autocomplete="off">
<input id="chat_id" placeholder="chat id"><button data-a="telegram_set">Save</button></fieldset>
<p id="msg"></p><h3>Status</h3><pre id="st">loading...</pre>
<script>
const msg=document.getElementById('msg');
document.querySelectorAll('button[data-a]').forEach(b=>b.onclick=()=>{const a=b.dataset.a;
if(b.className=='w'&&!confirm(a+'?'))return;const f=new URLSearchParams();
if(a=='sleep')f.set('seconds',document.getElementById('seconds').value);
if(a=='telegram_set'){f.set('token',document.getElementById('token').value);
f.set('chat_id',document.getElementById('chat_id').value);}
fetch('/action/'+a,{method:'POST',body:f}).then(r=>r.ok?r.json().then(j=>j.result):r.text())
.then(t=>{msg.textContent=a+': '+t;load()}).catch(e=>msg.textContent=a+': '+e)});
function load(){fetch('/status').then(r=>r.json()).then(s=>{
document.getElementById('st').textContent=JSON.stringify(s,null,1)})}
load();setInterval(load,3000);
</script></body></html>'''
