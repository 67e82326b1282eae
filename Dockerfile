# chatsvc: daphne serving the ASGI app. Build: docker build -t chatsvc .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 DEBUG=false
WORKDIR /app

COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY . .
# collectstatic needs settings that allow DEBUG=false; these build-time values are not used at run time.
RUN SECRET_KEY=build-only ALLOWED_HOSTS=localhost python manage.py collectstatic --noinput

RUN useradd --system --uid 1000 chatsvc
USER chatsvc
EXPOSE 8000
CMD ["sh", "-c", "python manage.py migrate --noinput && exec daphne --proxy-headers -e tcp:port=8000:interface=0.0.0.0:backlog=4096 chatsvc.asgi:application"]
